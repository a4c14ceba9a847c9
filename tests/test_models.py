import pytest
import torch

from stainless.models.components.generators import build_generator
from stainless.models.components.patchgan import PatchGANDiscriminator
from stainless.models.components.pix2pix_unet import UNetGenerator
from stainless.models.pix2pix_module import Pix2PixModule, adversarial_loss
from stainless.utils.pretrained import PretrainedWeightsMissing, check_encoder_weights

TINY_G = {"name": "pix2pix_unet", "num_downs": 5, "ngf": 8, "norm": "batch", "dropout": 0.5}


def make_module(**overrides):
    args = dict(
        in_channels=1, out_channels=1, generator=TINY_G, discriminator={"ndf": 8, "n_layers": 2, "norm": "batch"},
        loss={"adversarial": "vanilla", "adversarial_weight": 1.0, "l1_weight": 100.0, "perceptual_weight": 0.0},
        optimizer_g={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        optimizer_d={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        metrics={"lpips": False},
    )
    args.update(overrides)
    return Pix2PixModule(**args)


@pytest.mark.parametrize("num_downs,size", [(5, 32), (6, 64), (7, 128)])
def test_unet_shapes_and_range(num_downs, size):
    net = UNetGenerator(2, 3, num_downs=num_downs, ngf=4)
    out = net(torch.randn(2, 2, size, size))
    assert out.shape == (2, 3, size, size)
    assert out.abs().max() <= 1


def test_patchgan_depth_sets_patch_grid():
    x = torch.randn(1, 2, 64, 64)
    assert PatchGANDiscriminator(2, 8, n_layers=3)(x).shape == (1, 1, 6, 6)
    assert PatchGANDiscriminator(2, 8, n_layers=2)(x).shape == (1, 1, 14, 14)


@pytest.mark.parametrize("kind", ["vanilla", "lsgan", "hinge"])
def test_adversarial_losses_prefer_correct_logits(kind):
    # logits a perfect discriminator would give: lsgan regresses to 1/0, the others separate by sign
    real, fake = (torch.full((4,), 1.0), torch.zeros(4)) if kind == "lsgan" else (torch.full((4,), 3.0), torch.full((4,), -3.0))
    assert adversarial_loss(kind, real, True, True) < adversarial_loss(kind, fake, True, True)
    assert adversarial_loss(kind, fake, False, True) < adversarial_loss(kind, real, False, True)
    # the generator gains by making fakes look real
    assert adversarial_loss(kind, real, True, False) < adversarial_loss(kind, fake, True, False)


def test_one_gan_step_moves_both_networks_with_finite_losses():
    module = make_module()
    module.trainer = None
    opt_g, opt_d = module.configure_optimizers()
    g_before = [p.detach().clone() for p in module.generator.parameters()]
    d_before = [p.detach().clone() for p in module.discriminator.parameters()]
    # Drive training_step outside a Trainer: optimizers()/manual_backward need a minimal stand-in.
    module.optimizers = lambda: (opt_g, opt_d)
    module.manual_backward = lambda loss: loss.backward()
    logged = {}
    module.log_dict = lambda d, **k: logged.update({n: float(v.detach()) for n, v in d.items()})
    module.log = lambda n, v, **k: logged.update({n: float(v.detach())})
    module.toggled_optimizer = lambda opt: torch.enable_grad()
    module.clip_gradients = lambda *a, **k: None
    module._trainer = type("T", (), {"num_training_batches": 10})()
    batch = {"source": torch.rand(2, 1, 32, 32), "target": torch.rand(2, 1, 32, 32)}
    module.training_step(batch, 0)
    assert all(torch.isfinite(torch.tensor(v)) for v in logged.values())
    assert {"train/loss_d", "train/loss_g_adv", "train/loss_g_l1"} <= set(logged)
    assert any(not torch.equal(a, b) for a, b in zip(g_before, module.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, module.discriminator.parameters()))


ENCODERS = ["resnet18", "resnet34", "resnet50", "vgg16", "mobilenet_v2", "efficientnet-b0", "tu-inception_v3"]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_smp_generators_build_and_run(encoder):
    size = 128 if "inception" in encoder else 64  # inception's unpadded stem needs at least ~100 px
    net = build_generator({"name": encoder, "encoder_name": encoder, "encoder_weights": None}, 1, 1).eval()
    out = net(torch.randn(1, 1, size, size))
    assert out.shape == (1, 1, size, size) and out.abs().max() <= 1


def test_missing_imagenet_weights_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(PretrainedWeightsMissing, match=r"resnet18.*encoder_weights=null"):
        check_encoder_weights("resnet18", "imagenet")


def test_cached_imagenet_weights_are_used(tmp_path, monkeypatch):
    """A weight file in the Hugging Face cache layout is found and loaded without any network."""
    import json

    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    cache = tmp_path / "hub"
    snapshot = cache / f"models--{settings['repo_id'].replace('/', '--')}" / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    reference = get_encoder("resnet18", weights=None)
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    save_file(state, snapshot / "model.safetensors")
    (snapshot / "config.json").write_text(json.dumps({}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    check_encoder_weights("resnet18", "imagenet")  # no error
    net = build_generator({"name": "resnet18", "encoder_name": "resnet18", "encoder_weights": "imagenet"}, 3, 1)
    assert torch.allclose(net[0].encoder.conv1.weight, torch.tensor(0.5))


def test_speed_switches_channels_last_and_compile(cfg_train):
    """channels_last runs a real training step in NHWC; compile keeps parameter names (checkpoints unchanged)."""
    from pathlib import Path

    from stainless.models.checkpoint import module_from_checkpoint
    from stainless.train import train

    cfg = cfg_train("channels_last=true", "test=false")
    train(cfg)
    module, checkpoint = module_from_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    names = set(module.state_dict())
    assert names == set(checkpoint["state_dict"])
    module.use_channels_last()
    batch = module.on_after_batch_transfer({"source": torch.rand(2, 1, 32, 32)}, 0)
    assert batch["source"].is_contiguous(memory_format=torch.channels_last)
    module.compile_networks(backend="eager")
    assert set(module.state_dict()) == names
    with torch.no_grad():
        assert module(batch["source"]).shape == (2, 1, 32, 32)
