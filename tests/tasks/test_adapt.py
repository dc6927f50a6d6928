"""Auto defaults: the kind of image, flips, stem and epochs are decided from generated data."""

import numpy as np
import torch

from evergreen.config import TrainConfig
from tasks.train.adapt import image_kind, mirror_twins, resolve_train
from tasks.train.augment import PRESETS, augment_batch


def arrows(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RGB 32x32: class 0 an arrow pointing left, 1 the same arrow pointing right, 2 a disc;
    random lighting and textured backgrounds."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    x, y = [], []
    for label in range(3):
        for _ in range(n):
            img = rng.integers(40, 120, (3, 32, 32)).astype(np.float32)
            if label == 2:
                mask = (yy - 16) ** 2 + (xx - 16) ** 2 < 80
            else:
                mask = (np.abs(yy - 16) <= (xx - 6) * 0.6) & (xx >= 6) & (xx <= 24) \
                    | ((np.abs(yy - 16) <= 2) & (xx > 12) & (xx <= 28))
                mask = mask if label == 1 else mask[:, ::-1]
            colour = rng.integers(150, 255, 3)[:, None]
            img[:, mask] = colour
            x.append(np.clip(img * rng.uniform(0.5, 1.2), 0, 255).astype(np.uint8))
            y.append(label)
    return np.stack(x), np.array(y)


def ink(n: int = 60) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = np.zeros((n, 1, 28, 28), np.uint8)
    x[:, :, 8:20, 12:15] = 255
    x[rng.random(x.shape) < 0.05] = 255
    return x


def test_kind_is_photos_for_colour_and_characters_for_ink_on_paper():
    assert image_kind(arrows()[0])[0] == "photos"
    assert image_kind(ink())[0] == "characters"
    tones = np.random.default_rng(2).normal(128, 30, (50, 1, 32, 32)).clip(0, 255).astype(np.uint8)
    assert image_kind(tones)[0] == "photos"


def test_mirrored_classes_turn_flips_off_and_symmetric_ones_keep_them():
    x, y = arrows()
    assert mirror_twins(x, y, ["left", "right", "disc"]) == [("left", "right")]
    cfg, augment, decided = resolve_train(TrainConfig(), (x, y), ["left", "right", "disc"])
    assert decided["kind"] == "photos" and augment.hflip is False
    assert "left~right" in decided["augment"]["hflip_why"]
    keep = y != 1  # without the right-pointing class nothing mirrors into another
    _, augment, _ = resolve_train(TrainConfig(), (x[keep], y[keep]), ["left", "right", "disc"])
    assert augment.hflip is True and augment.crop < 1 and augment.jitter > 0


def test_stem_epochs_and_user_settings():
    x, y = arrows()
    cfg, _, decided = resolve_train(TrainConfig(), (x, y), ["a", "b", "c"])
    assert cfg.cnn.stem_stride == 1  # a 32 px photo keeps its full map
    assert cfg.epochs == 40 and decided["epochs"] == 40  # 400k samples / 120 capped at 40
    cfg, _, _ = resolve_train(TrainConfig(budget={"samples": 1200, "min_epochs": 2}), (x, y),
                              ["a", "b", "c"])
    assert cfg.epochs == 10
    cfg, augment, decided = resolve_train(
        TrainConfig(epochs=3, augment={"preset": "characters", "rotation": 0.0},
                    cnn={"stem_stride": 2}), (x, y), ["a", "b", "c"])
    assert (cfg.epochs, cfg.cnn.stem_stride, augment.rotation, augment.hflip) == (3, 2, 0.0, False)
    assert decided["kind_why"] == "train.augment.preset"
    x28 = np.repeat(ink(), 1, axis=0)
    cfg, _, _ = resolve_train(TrainConfig(), (x28, np.zeros(len(x28), int)), ["a"])
    assert cfg.cnn.stem_stride == 2  # strokes survive a halved 28 px map


def test_teacher_depth_follows_the_image_size():
    from nets import build_model
    from tasks.train.adapt import auto_channels

    cfg = TrainConfig()
    assert auto_channels(cfg, (3, 32, 32), 1)[0] == [32, 64, 128]
    assert auto_channels(cfg, (1, 8, 8), 1)[0] == [32, 64, 128]  # never under 3 blocks
    assert auto_channels(cfg, (3, 128, 128), 2)[0] == [32, 64, 128, 256]
    widths, why = auto_channels(cfg, (3, 224, 224), 2)
    assert widths == [32, 64, 128, 256, 256] and "5 blocks" in why
    # the map global pooling averages is about 4 px, whatever the image size
    for side, stride in ((32, 1), (128, 2), (224, 2)):
        options = {"channels": auto_channels(cfg, (3, side, side), stride)[0], "stem_stride": stride}
        features = build_model("cnn", (3, side, side), 10, **options).features
        assert 3 <= features(torch.zeros(1, 3, side, side)).shape[-1] <= 4
    mine = TrainConfig(cnn={"channels": [8, 16]})
    assert auto_channels(mine, (1, 64, 64), 2) == ([8, 16], "train.cnn.channels")
    x, y = arrows()
    cfg, _, decided = resolve_train(TrainConfig(), (x, y), ["a", "b", "c"])
    assert cfg.cnn.channels == decided["channels"] == [32, 64, 128] and "channels_why" in decided


def test_photo_augmentation_crops_jitters_and_stays_finite():
    x = torch.rand(8, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(x, PRESETS["photos"], gen, norm=([0.5] * 3, [0.25] * 3))
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.allclose(out, x)


def test_precision_follows_the_setting_the_cpu_and_the_network_cost(monkeypatch):
    import tasks.train.adapt as adapt
    from nets import build_model

    photos = build_model("cnn", (3, 32, 32), 43, channels=[32, 64, 128], stem_stride=1)
    digits = build_model("cnn", (1, 8, 8), 10, channels=[32, 64, 128], stem_stride=1)
    monkeypatch.setattr(adapt, "native_bf16", lambda: True)

    assert adapt.resolve_precision("fp32", photos, (3, 32, 32)) == ("fp32", "train.precision")
    assert adapt.resolve_precision("auto", photos, (3, 32, 32))[0] == "bf16"
    small, why = adapt.resolve_precision("auto", digits, (1, 8, 8))
    assert small == "fp32" and "too small" in why
    assert adapt.resolve_precision("auto", digits, (1, 8, 8), gpu=True) == ("bf16", "GPU")
    monkeypatch.setattr(adapt, "native_bf16", lambda: False)
    assert adapt.resolve_precision("auto", photos, (3, 32, 32)) == (
        "fp32", "no native bf16 (AMX) on this CPU")


def test_counting_flops_leaves_batchnorm_statistics_and_mode_alone():
    from nets import build_model
    from tasks.train.adapt import forward_mflops

    model = build_model("cnn", (3, 32, 32), 43, channels=[32, 64, 128], stem_stride=1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    mflops = forward_mflops(model, (3, 32, 32))

    assert 60 < mflops < 100  # 38M multiply-adds in the convolutions
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_card_records_what_the_budget_asked_for():
    x, y = arrows(20)
    cfg = TrainConfig.model_validate({"budget": {"samples": 6000, "max_epochs": 40}})

    resolved, _, decided = resolve_train(cfg, (x, y), ["l", "r", "o"])

    assert decided["budget_epochs"] == 100 and resolved.epochs == decided["epochs"] == 40


def test_progressive_resizing_shrinks_the_early_epochs_of_a_cnn_on_32_px_only():
    x, y = arrows(10)
    cfg, _, decided = resolve_train(TrainConfig(), (x, y), ["a", "b", "c"])
    assert cfg.progressive.scale == 0.75 and decided["progressive"]["scale"] == 0.75
    assert "24 px" in decided["progressive"]["why"]
    x28 = ink()
    cfg, _, decided = resolve_train(TrainConfig(), (x28, np.zeros(len(x28), int)), ["a"])
    assert cfg.progressive.scale == 1.0 and "28 px < 32 px" in decided["progressive"]["why"]
    cfg, _, decided = resolve_train(TrainConfig(model="seed_cnn"), (x, y), ["a", "b", "c"])
    assert cfg.progressive.scale == 1.0 and "seed_cnn" in decided["progressive"]["why"]
    cfg, _, decided = resolve_train(TrainConfig(progressive={"scale": 0.5}), (x, y), ["a", "b", "c"])
    assert cfg.progressive.scale == 0.5 and decided["progressive"]["why"] == "train.progressive.scale"


def test_a_resized_warp_samples_the_whole_image_at_the_smaller_size():
    x = torch.rand(4, 3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(x, PRESETS["photos"], gen, norm=([0.5] * 3, [0.25] * 3), size=(24, 24))
    assert out.shape == (4, 3, 24, 24) and torch.isfinite(out).all()
    still = PRESETS["characters"].__class__(shift=0.0, rotation=0.0, scale=0.0)
    flat = torch.ones(2, 1, 32, 32) * 0.3  # an unwarped flat image stays flat at any size
    assert torch.allclose(augment_batch(flat, still, gen, size=(16, 16)), torch.full((2, 1, 16, 16), 0.3))
