"""Scoring checkpoints: images against targets (image metrics, hallucinated and missed nuclei), segmentations
against masks (pixels and objects), model against baselines, reports, and run comparisons.

``stainless.evaluate.evaluate`` (the entry function of ``evaluate.py``) loads a checkpoint and hands it to
:func:`stainless.evaluation.images.evaluate_images` or :func:`stainless.evaluation.segmentation.evaluate_segmenter`.
"""
