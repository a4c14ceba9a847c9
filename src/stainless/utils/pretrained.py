"""Finding pretrained weights on this machine, and saying clearly what to do when they are absent.

ImageNet encoder weights (segmentation_models_pytorch, timm) come from the Hugging Face hub; the LPIPS trunks
(AlexNet/VGG/SqueezeNet) from torchvision's download server. Offline machines must not sit in retry loops:
we look in the local caches first, and only ask the network when it answers.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.utilities import rank_zero_warn


class PretrainedWeightsMissing(RuntimeError):
    """Pretrained weights are neither cached here nor downloadable."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the host of ``url`` opens within ``timeout`` seconds."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hf_cached(repo_id: str, filename: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return isinstance(found, str)


def _encoder_weight_files(encoder_name: str, weights: str) -> tuple[str, list[str], str | None]:
    """(repo id, candidate files, revision) of an smp or timm encoder's pretrained weights."""
    if encoder_name.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder_name[3:])
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            raise PretrainedWeightsMissing(f"timm model {encoder_name[3:]!r} has no pretrained weights on the hub")
        return repo, ["model.safetensors", "pytorch_model.bin"], None
    from segmentation_models_pytorch.encoders import encoders

    if encoder_name not in encoders:
        raise ValueError(f"backbone.encoder_name: unknown encoder {encoder_name!r}")
    settings = encoders[encoder_name]["pretrained_settings"].get(weights)
    if settings is None:
        available = sorted(encoders[encoder_name]["pretrained_settings"])
        raise ValueError(f"backbone.encoder_weights: {encoder_name} has no {weights!r} weights; choose from {available}")
    return settings["repo_id"], ["model.safetensors"], settings.get("revision")


def check_encoder_weights(encoder_name: str, weights: str | None) -> None:
    """Make sure an encoder's pretrained weights can be loaded, before smp tries (and retries) to download.

    Raises:
        PretrainedWeightsMissing: not cached and the hub is offline or unreachable; the message says what to do.
    """
    if weights is None:
        return
    repo, files, revision = _encoder_weight_files(encoder_name, weights)
    if any(_hf_cached(repo, f, revision) for f in files):
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _offline() and host_reachable(endpoint):
        return  # smp/timm will download them
    raise PretrainedWeightsMissing(
        f"{weights} weights for encoder {encoder_name!r} are not in the Hugging Face cache "
        f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and the hub ({endpoint}) cannot be reached. "
        f"Train from scratch with backbone.encoder_weights=null, or on a machine with internet run "
        f"`huggingface-cli download {repo}` and copy its cache here (or point HF_HOME at it)."
    )


LPIPS_TRUNKS = {
    "alex": ("alexnet", "AlexNet_Weights"),
    "vgg": ("vgg16", "VGG16_Weights"),
    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights"),
}


def lpips_trunk_file(net: str, explicit: str | None = None) -> Path | None:
    """Path of the torchvision ImageNet weights that LPIPS's ``net`` trunk needs, or None if absent.

    Looks at ``explicit`` first, then torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``),
    where torchvision itself caches them.
    """
    import torch
    import torchvision

    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise PretrainedWeightsMissing(f"{path}: LPIPS trunk weights file does not exist")
        return path
    weights_enum = getattr(torchvision.models, LPIPS_TRUNKS[net][1]).IMAGENET1K_V1
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights_enum.url).path).name
    return path if path.is_file() else None


def lpips_missing_message(net: str) -> str:
    import torch
    import torchvision

    url = getattr(torchvision.models, LPIPS_TRUNKS[net][1]).IMAGENET1K_V1.url
    return (
        f"LPIPS is skipped: the ImageNet weights of its {LPIPS_TRUNKS[net][0]} trunk are not on this machine. "
        f"Download {url} into {Path(torch.hub.get_dir()) / 'checkpoints'} (or set metrics.lpips_trunk=PATH); "
        f"the other metrics are computed as usual."
    )


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """Warn (rank zero) once per process for each distinct message."""
    if message not in _WARNED:
        _WARNED.add(message)
        rank_zero_warn(message)
