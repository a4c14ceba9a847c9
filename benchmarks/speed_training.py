"""Training speed: framework overhead, data pipeline throughput, and the speed switches (both models).

1. Overhead: time per training step of stainless (Lightning module + Trainer) against a plain PyTorch loop with
   the same networks, batch, optimisers, losses and in-memory batches [target: ratio <= 1.05].
2. Data: samples per second the DataModule delivers (default augmentation) against samples per second the model
   consumes in training [target: >= 2x], for num_workers 0, 1, 2.
5. Switches: bf16-mixed precision, channels_last, torch.compile, each against the default step.

Blocks of steps are interleaved (stainless, plain, stainless, plain, ...) and medians quoted: this machine is
shared and noisy. Run from the repository root: .venv/bin/python benchmarks/speed_training.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from common import StepTimer, median, write_result

from stainless.data.datamodule import MicroscopyDataModule
from stainless.models.pix2pix_module import Pix2PixModule, adversarial_loss
from stainless.models.segmentation_module import SegmentationModule

BATCH, PATCH = 8, 128
AUGMENTATION = {  # conf/augmentation/light.yaml
    "geometric": [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}, {"_target_": "albumentations.VerticalFlip", "p": 0.5},
                  {"_target_": "albumentations.RandomRotate90", "p": 0.5}],
    "intensity": [{"_target_": "albumentations.RandomBrightnessContrast", "brightness_limit": 0.1, "contrast_limit": 0.1, "p": 0.5}],
}


def pix2pix_module() -> Pix2PixModule:
    """The demo recipe's networks (conf/experiment/virtual_labeling_demo.yaml): U-Net ngf 32, PatchGAN ndf 32."""
    adam = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-4, "betas": [0.5, 0.999]}
    return Pix2PixModule(
        1, 1, generator={"name": "pix2pix_unet", "num_downs": 7, "ngf": 32, "norm": "batch", "dropout": 0.5},
        discriminator={"ndf": 32, "n_layers": 3, "norm": "batch"},
        loss={"adversarial": "vanilla", "adversarial_weight": 1.0, "l1_weight": 100.0, "perceptual_weight": 0.0},
        optimizer_g=adam, optimizer_d=adam, metrics={"lpips": False}, nuclei={"enabled": False},
    )


def segmentation_module() -> SegmentationModule:
    """The RBC recipe (conf/experiment/rbc_segmentation.yaml): U-Net, ResNet-18 encoder, BCE + Jaccard."""
    return SegmentationModule(
        "unet", {"name": "resnet18", "encoder_name": "resnet18", "encoder_weights": None}, in_channels=1, classes=1,
        loss={"name": "bce_jaccard", "pos_weight": 3.0}, optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
    )


def batches(job: str, n: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        source = torch.rand(BATCH, 1, PATCH, PATCH, generator=generator)
        target = (torch.rand(BATCH, 1, PATCH, PATCH, generator=generator) if job == "pix2pix"
                  else (torch.rand(BATCH, PATCH, PATCH, generator=generator) > 0.7).long())
        out.append({"source": source, "target": target})
    return out


class _Tick(L.Callback):
    def __init__(self, timer: StepTimer):
        self.timer = timer

    def on_train_batch_start(self, *args) -> None:
        self.timer.tick()

    def on_train_end(self, *args) -> None:
        self.timer.tick()


def stainless_steps(job: str, data: list[dict], precision: str = "32-true", channels_last: bool = False,
                    compile: bool = False) -> list[float]:
    module = pix2pix_module() if job == "pix2pix" else segmentation_module()
    if channels_last:
        module.use_channels_last()
    if compile:
        module.compile_networks()
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            limit_val_batches=0, precision=precision, callbacks=[_Tick(timer)], default_root_dir=root)
        loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
        trainer.fit(module, train_dataloaders=loader)
    return timer.times


def plain_steps(job: str, data: list[dict]) -> list[float]:
    """The same computation written as a bare PyTorch loop."""
    module = pix2pix_module() if job == "pix2pix" else segmentation_module()
    timer = StepTimer()
    if job == "pix2pix":
        generator, discriminator = copy.deepcopy(module.generator).train(), copy.deepcopy(module.discriminator).train()
        opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        for batch in data:
            timer.tick()
            x, y = batch["source"] * 2 - 1, batch["target"] * 2 - 1
            fake = generator(x)
            discriminator.requires_grad_(True)
            loss_d = 0.5 * (adversarial_loss("vanilla", discriminator(torch.cat([x, y], 1)), True, True)
                            + adversarial_loss("vanilla", discriminator(torch.cat([x, fake.detach()], 1)), False, True))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            discriminator.requires_grad_(False)
            loss_g = adversarial_loss("vanilla", discriminator(torch.cat([x, fake], 1)), True, False) + 100 * F.l1_loss(fake, y)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            loss_d.item(), loss_g.item()  # Lightning's logging reads the values too
    else:
        net, criterion = copy.deepcopy(module.net).train(), copy.deepcopy(module.criterion)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        for batch in data:
            timer.tick()
            loss = criterion(net(batch["source"]), batch["target"])["total"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()
    timer.tick()
    return timer.times


def data_throughput(job: str, workers: int, n_batches: int, root: Path) -> float:
    """Samples per second out of the DataModule's training loader (default light augmentation)."""
    if job == "pix2pix":
        from stainless.data.synthetic import generate_nuclei_dataset

        data = generate_nuclei_dataset(root / "nuclei", n_images=12, size=256)
        options = {"source_dir": str(data / "membrane"), "target_dir": str(data / "nuclei"), "label_dir": str(data / "labels")}
    else:
        from stainless.data.synthetic_rbc import generate_rbc_dataset

        data = generate_rbc_dataset(root / "rbc", n_frames=12, n_labelme=12, size=256)
        options = {"labelme_dir": str(data / "labelme"), "target_type": "mask",
                   "normalization": {"mode": "range", "vmin": 0, "vmax": 255}}
    datamodule = MicroscopyDataModule(**options, patch_size=PATCH, patches_per_image=64, batch_size=BATCH,
                                      num_workers=workers, persistent_workers=False, augmentation=AUGMENTATION,
                                      split={"val_fraction": 0.1, "test_fraction": 0.0})
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    next(loader)  # workers started, first images decoded and cached
    started = time.perf_counter()
    for _ in range(n_batches):
        next(loader)
    return n_batches * BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    args = parser.parse_args()
    steps, repeats, warmup = (6, 1, 2) if args.quick else (14, 3, 3)
    torch.manual_seed(0)
    record: dict = {"batch": BATCH, "patch": PATCH, "steps_per_block": steps, "repeats": repeats, "jobs": {}}
    summary = []
    for job in ("pix2pix", "segmentation"):
        data = batches(job, steps + warmup)
        variants = {"stainless": lambda: stainless_steps(job, data), "plain": lambda: plain_steps(job, data),
                    "bf16-mixed": lambda: stainless_steps(job, data, precision="bf16-mixed"),
                    "channels_last": lambda: stainless_steps(job, data, channels_last=True)}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeats):  # interleaved blocks
            for name, run in variants.items():
                times[name] += run()[warmup:]
        compiled_error = None
        try:  # compile: the first steps compile; only the steps after warm-up count
            times["compile"] = stainless_steps(job, batches(job, steps + 3 * warmup), compile=True)[3 * warmup:]
        except Exception as error:  # noqa: BLE001 - no compiler / unsupported op: reported, not fatal
            compiled_error = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        medians = {name: median(t) for name, t in times.items()}
        overhead = medians["stainless"] / medians["plain"]
        consumed = BATCH / medians["stainless"]
        with tempfile.TemporaryDirectory() as root:
            delivered = {w: data_throughput(job, w, 10 if args.quick else 30, Path(root)) for w in (0, 1, 2)}
        record["jobs"][job] = {
            "median_step_s": medians, "overhead_ratio": overhead, "overhead_target": 1.05, "overhead_ok": overhead <= 1.05,
            "switch_speedup_vs_default": {k: medians["stainless"] / v for k, v in medians.items() if k not in ("stainless", "plain")},
            "compile_error": compiled_error,
            "model_samples_per_s": consumed, "loader_samples_per_s": delivered,
            "loader_to_model_ratio": {w: d / consumed for w, d in delivered.items()}, "loader_target": 2.0,
        }
        summary.append(f"{job}: overhead x{overhead:.3f}, loader/model x{delivered[0] / consumed:.1f} (0 workers)")
    write_result("speed_training", record, "; ".join(summary))


if __name__ == "__main__":
    main()
