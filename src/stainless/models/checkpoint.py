"""Loading checkpoints safely (tensors and plain values only) and rebuilding models from them alone."""

from __future__ import annotations

import copy
import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the file named in the message."""


def load_checkpoint(path: str | Path, trusted: bool = False) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: no code in the file is ever executed.

    Args:
        trusted: unpickle anything (``trust_checkpoint=true``): runs whatever code the file carries, so only
            for your own files written by other tools.

    Raises:
        CheckpointError: missing file, or a file that is not a plain-data PyTorch checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    if trusted:
        rank_zero_warn(f"{path}: loaded with trust_checkpoint=true (full unpickling: any code in it runs)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: not a loadable weights-only checkpoint (refused or corrupt: {first_line})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dictionary, found {type(checkpoint).__name__}")
    return checkpoint


def module_class(checkpoint: dict[str, Any], path: str | Path) -> type:
    """The stainless LightningModule class recorded in a checkpoint."""
    name = checkpoint.get("stainless", {}).get("module")
    if not name or not name.startswith("stainless."):
        raise CheckpointError(f"{path}: not a stainless checkpoint (no model class recorded)")
    return get_class(name)


def module_from_checkpoint(path: str | Path, trusted: bool = False):
    """Rebuild a stainless LightningModule (weights included) from its checkpoint alone.

    Pretrained-encoder downloads are switched off: the checkpoint carries every weight.

    Returns:
        (module in eval mode, checkpoint dict)
    """
    checkpoint = load_checkpoint(path, trusted)
    cls = module_class(checkpoint, path)
    hparams = copy.deepcopy(checkpoint.get("hyper_parameters", {}))
    for key in ("generator", "backbone"):
        if isinstance(hparams.get(key), dict) and "encoder_weights" in hparams[key]:
            hparams[key]["encoder_weights"] = None
    module = cls(**hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval(), checkpoint


def resolve_resume(ckpt_path: str | None, runs_root: str | Path, output_dir: str | Path) -> str | None:
    """The checkpoint a run resumes from: a file, a run directory (its ``checkpoints/last.ckpt``), or ``last``.

    ``last`` is the newest ``checkpoints/last.ckpt`` of an earlier run of the same task under ``runs_root``
    (``outputs/<task>``): a resumed run gets a directory of its own, so Lightning's own ``"last"`` (which looks in
    the new run's directory) would find nothing.

    Raises:
        CheckpointError: nothing to resume from.
    """
    if not ckpt_path:
        return None
    if str(ckpt_path) == "last":
        own = Path(output_dir).resolve()
        candidates = [p for p in Path(runs_root).glob("**/checkpoints/last.ckpt") if own not in p.resolve().parents]
        if not candidates:
            raise CheckpointError(f"ckpt_path=last: no checkpoints/last.ckpt of an earlier run under {runs_root}")
        found = max(candidates, key=lambda p: p.stat().st_mtime)
        rank_zero_info(f"ckpt_path=last: resuming {found}")
        return str(found)
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.is_file():
                return str(candidate)
        raise CheckpointError(f"{path}: a directory without checkpoints/last.ckpt to resume from")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    return str(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside their destination, then renamed into place.

    ``os.replace`` is atomic on POSIX file systems: a process killed while saving (SIGKILL, out of memory, the
    node lost) leaves the previous file intact, never half a file. Lightning's own writer serialises to memory
    first but then writes the destination in place. Remote paths (``s3://`` ...) use Lightning's writer.
    Loading is always ``weights_only``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location or "cpu", weights_only=True if weights_only is None else weights_only)


def package_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The PyTorch state-dict weights and the ``config.stainless`` block of a stainless bioimage.io package
    (a .zip or a folder), read without running anything in it.

    Raises:
        CheckpointError: not a package, no state-dict weights, or not made by stainless.
    """
    import yaml

    path = Path(path)

    def read(name: str) -> bytes:
        if path.is_dir():
            return (path / name).read_bytes()
        with zipfile.ZipFile(path) as archive:
            return archive.read(name)

    try:
        rdf = yaml.safe_load(read("rdf.yaml"))
    except (KeyError, FileNotFoundError, zipfile.BadZipFile):
        raise CheckpointError(f"{path}: not a bioimage.io package (no rdf.yaml)") from None
    stainless = (rdf.get("config") or {}).get("stainless")
    weights = (rdf.get("weights") or {}).get("pytorch_state_dict")
    if not stainless or not weights:
        raise CheckpointError(f"{path}: not a bioimage.io package made by stainless (no config.stainless or no "
                          "pytorch_state_dict weights); init_from needs one of ours")
    state = torch.load(io.BytesIO(read(weights["source"])), map_location="cpu", weights_only=True)
    return state, stainless


def is_package(path: str | Path) -> bool:
    path = Path(path)
    return (path.is_dir() and (path / "rdf.yaml").is_file()) or (path.suffix.lower() == ".zip" and path.is_file())


def _package_weights(module: torch.nn.Module, path: Path) -> dict[str, Any]:
    """The network weights of a stainless bioimage.io package, named as in ``module``."""
    from stainless.models.inference_network import network_attribute, network_kwargs

    state, meta = package_state_dict(path)
    job = network_kwargs(module)["job"]
    if meta.get("job") != job:
        raise CheckpointError(f"{path}: a {meta.get('job')} package cannot initialise a {job} model")
    attribute = network_attribute(module)
    return {f"{attribute}.{key.removeprefix('net.')}": value for key, value in state.items()}


def init_weights_from(module: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Copy matching weights (same name and shape) from a checkpoint, or from a bioimage.io package exported by
    stainless (its PyTorch state-dict weights; a .zip or a folder), into ``module`` (fine-tuning).

    Returns:
        report with ``loaded`` count and the ``missing``, ``unexpected`` and ``shape_mismatch`` key lists.
    """
    path = Path(path).expanduser()
    if is_package(path):
        source = _package_weights(module, path)
    else:
        checkpoint = load_checkpoint(path)
        source = checkpoint.get("state_dict", checkpoint)
    target = module.state_dict()
    matched = {k: v for k, v in source.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    report = {
        "path": str(path),
        "loaded": len(matched),
        "missing": sorted(set(target) - set(source)),
        "unexpected": sorted(set(source) - set(target)),
        "shape_mismatch": sorted(k for k in source if k in target and tuple(source[k].shape) != tuple(target[k].shape)),
    }
    module.load_state_dict(matched, strict=False)
    rank_zero_info(
        f"init_from {path}: loaded {report['loaded']} tensors; {len(report['missing'])} missing "
        f"{report['missing'][:5]}, {len(report['unexpected'])} unexpected {report['unexpected'][:5]}, "
        f"{len(report['shape_mismatch'])} with another shape {report['shape_mismatch'][:5]}"
    )
    return report
