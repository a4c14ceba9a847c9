"""What an evaluation reads: the checkpoint's data settings with evaluate.py's channel selection, and new images
checked before the first prediction."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from stainless.data.samples import Sample, input_samples
from stainless.data.validate import validate_samples
from stainless.io import ImageReadError, images_info
from stainless.utils.config import to_plain


def data_options(cfg: DictConfig, data_hp: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's data settings with evaluate.py's own channel selection (``source_channels``,
    ``target_channels``, ``channel_axis``) applied."""
    options = dict(data_hp)
    for key in ("source_channels", "target_channels", "channel_axis"):
        if cfg.get(key) is not None:
            options[key] = to_plain(cfg[key])
    return options


def new_input_samples(cfg: DictConfig, options: dict[str, Any], module) -> list[Sample]:
    """The samples of ``input=`` (and ``target=``), every file checked before the first prediction (tiling serves
    images of any size: no patch check), with as many input channels as the checkpoint's model takes.

    Raises:
        ImageReadError: a bad file, inputs with different channel counts, or a count the model does not take.
    """
    samples = input_samples(to_plain(cfg.input), to_plain(cfg.target), options.get("source_channels"),
                            options.get("target_channels"))
    samples = validate_samples({"input": samples}, {**options, "patch_size": None}, skip_hint=None)["input"]
    expected = int(module.hparams.in_channels)
    for sample in samples[:1]:  # the validation pass made every input agree with the first
        if sample.source.suffix.lower() == ".json":
            continue
        found = images_info(sample.source_files, sample.source_channels, options.get("channel_axis", "auto"))[0][0]
        if found != expected:
            chosen = f" (source_channels={list(sample.source_channels)})" if sample.source_channels else ""
            raise ImageReadError(
                f"{sample.source}: {found} input channel(s){chosen}, but the checkpoint's model takes {expected}; "
                f"choose them with source_channels=[...] (e.g. source_channels=[0]) or check that input= and "
                "ckpt_path= belong together")
    return samples
