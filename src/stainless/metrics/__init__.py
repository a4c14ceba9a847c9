from stainless.metrics.image import ImageMetrics, LPIPSScorer, image_maps, per_image_metrics

__all__ = ["LPIPSScorer", "ImageMetrics", "image_maps", "per_image_metrics"]
