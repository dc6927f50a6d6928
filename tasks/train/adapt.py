"""Auto defaults: what the data decides where params say auto or null.

Each decision comes with the reason the model card, the registry entry and the run summary
record: the kind of image (which augmentation preset), whether a horizontal flip keeps the
label, the teacher's stem and widths, how many epochs the sample budget buys, whether the
early epochs see smaller images, and the precision training runs in. `model_options` gives the
network builder's options, all resolved, for the card to record.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from evergreen.config import AugmentConfig, TrainConfig
from nets.cnn import auto_stem_stride
from tasks.train.augment import PRESETS, Augment

SAMPLE = 4000  # images looked at to decide; the decisions are statistics, not per-sample
INK_SHARE = 0.5  # characters: at least this share of pixels near the darkest or lightest level


def image_kind(x: np.ndarray) -> tuple[str, str]:
    """('characters' | 'photos', why): one channel (or colourless RGB) of mostly ink and paper
    is characters (digits, letters, scans); anything with colour or continuous tones is photos."""
    sample = x[:: max(1, len(x) // SAMPLE)].astype(np.float32)
    if sample.shape[1] == 3 and np.abs(sample - sample.mean(1, keepdims=True)).mean() > 4:
        return "photos", "colour images"
    lo, hi = float(sample.min()), float(sample.max())
    margin = (hi - lo) / 8
    extreme = float(((sample <= lo + margin) | (sample >= hi - margin)).mean())
    if extreme >= INK_SHARE:
        return "characters", f"{extreme:.0%} of pixels are ink or paper (two-tone)"
    return "photos", f"continuous tones ({extreme:.0%} of pixels at the extremes)"


def mirror_twins(x: np.ndarray, y: np.ndarray, classes: list[str],
                 seed: int = 0) -> list[tuple[str, str]]:
    """Class pairs that are each other's mirror image (keep-left / keep-right signs, b / d),
    by either of two tests on per-image standardized pixels (lighting removed):

    - class means: a's mean mirrored is nearest b's mean and b's nearest a's, and mirroring
      closes at least a quarter of their distance;
    - held-out images: mirrored, a's images are nearest b's mean (from the other half of the
      data) more often than a's own, at least a quarter of the time, and b's likewise a's,
      averaged over random halves.

    Both ways, so one asymmetric class (a face turned aside) is not a twin. Either test is
    enough: a flip that turns one class into another corrupts labels, while a flip left out
    only costs some augmentation. On GTSRB the means find 33~34 (turn right / left ahead) on
    some splits, the images 38~39 (keep right / left) on every one.
    """
    present = [c for c in range(len(classes)) if (y == c).any()]
    if len(present) < 2:
        return []
    pairs = twins_by_means(x, y, present) | twins_by_images(x, y, present, seed)
    return [(classes[a], classes[b]) for a, b in sorted(pairs)]


def twins_by_means(x: np.ndarray, y: np.ndarray, present: list[int]) -> set[tuple[int, int]]:
    """Class pairs whose mirrored means are each other's nearest (the first test of mirror_twins)."""
    means = np.stack([standardized(x[np.flatnonzero(y == c)[:SAMPLE // 4]]).mean(0)
                      for c in present])
    flat = means.reshape(len(present), -1)
    mirrored = means[..., ::-1].reshape(len(present), -1)
    to = np.sqrt(((mirrored[:, None, :] - flat[None, :, :]) ** 2).sum(-1))  # i mirrored to j
    apart = np.sqrt(((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1))
    nearest = to.argmin(1)
    return {(present[i], present[j]) for i, j in enumerate(nearest)
            if j != i and nearest[j] == i and i < j and to[i, j] <= 0.75 * apart[i, j]}


def twins_by_images(x: np.ndarray, y: np.ndarray, present: list[int], seed: int,
                    per_class: int = 200, rounds: int = 5) -> set[tuple[int, int]]:
    """Class pairs whose mirrored held-out images fall nearest each other's mean (the second test)."""
    rng = np.random.default_rng(seed)
    k = len(present)
    share = np.zeros((k, k))  # share[i, j]: i's mirrored held-out images nearest j's mean
    for _ in range(rounds):
        picked = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in present]
        fit = [p[: (len(p) + 1) // 2] for p in picked]
        held = [p[(len(p) + 1) // 2:] if len(p) > 1 else p for p in picked]
        means = np.stack([standardized(x[f]).mean(0) for f in fit]).reshape(k, -1)
        norms = (means ** 2).sum(1)
        for i, h in enumerate(held):
            flat = standardized(x[h])[..., ::-1].reshape(len(h), -1)
            nearest = (norms[None] - 2 * flat @ means.T).argmin(1)
            share[i] += np.bincount(nearest, minlength=k) / len(h) / rounds
    other = share - np.diag(np.full(k, np.inf))
    top = other.argmax(1)
    return {(present[i], present[j]) for i, j in enumerate(top) if i < j and top[j] == i
            and min(share[i, j], share[j, i]) >= 0.25
            and share[i, j] > share[i, i] and share[j, i] > share[j, j]}


def standardized(x: np.ndarray) -> np.ndarray:
    """Each image at zero mean and unit variance (float32)."""
    v = x.astype(np.float32)
    v -= v.mean(axis=(1, 2, 3), keepdims=True)
    return v / (v.std(axis=(1, 2, 3), keepdims=True) + 1e-6)


def resolve_augment(cfg: AugmentConfig, kind: str, x: np.ndarray, y: np.ndarray,
                    classes: list[str]) -> tuple[Augment | None, dict]:
    """The ranges to train with for this kind of image, and the decision as the card records it."""
    if not cfg.enabled:
        return None, {"enabled": False}
    aug = configured_augment(cfg, kind)
    flip_note = "train.augment.hflip" if cfg.hflip is not None else "preset"
    if cfg.hflip is None and aug.hflip:
        twins = mirror_twins(x, y, classes)
        if twins:
            aug = dataclasses.replace(aug, hflip=False)
            shown = ", ".join(f"{a}~{b}" for a, b in twins[:4]) + (" ..." if len(twins) > 4 else "")
            flip_note = f"off: classes mirror each other ({shown})"
        else:
            flip_note = "on: no two classes mirror each other"
    return aug, {"preset": kind, "hflip_why": flip_note, **aug.as_dict()}


def stem_stride(kind: str, in_shape: tuple[int, ...]) -> tuple[int, str]:
    """2 (the first convolution halves the map) when the image is large enough to keep its
    detail: from 16 px for strokes, from 48 px for photos (GTSRB at 32 px: 0.985 with stride 1
    against 0.975 with 2, at 3.7x the time); else 1."""
    side = min(in_shape[1:])
    floor = 16 if kind == "characters" else 48
    return (2 if side >= floor else 1), f"{kind} of {side} px (halved from {floor} px)"


BASE_WIDTH, MAX_WIDTH = 32, 256  # auto channels: the first block's width, doubled per block
MIN_BLOCKS, MAX_BLOCKS = 3, 5
FINAL_SIDE = 4  # px: the map global pooling averages, as three blocks leave it on 32 px photos


def auto_channels(cfg: TrainConfig, in_shape: tuple[int, ...], stride: int) -> tuple[list[int], str]:
    """(widths, why): train.cnn.channels, or for auto a block per halving of the map (after the
    stem) down to FINAL_SIDE px, between 3 and 5 blocks, widths 32, 64, 128, 256 at most.

    The width does not shrink with the dataset: on 200 digits and on 280 faces (64 px) the
    half-width teacher scored 1.1 and 5.4 points below this one (3 seeds, BENCHMARKS.md)."""
    if cfg.cnn.channels != "auto":
        return list(cfg.cnn.channels), "train.cnn.channels"
    side = min(in_shape[1:]) / stride
    blocks = min(MAX_BLOCKS, max(MIN_BLOCKS, math.ceil(math.log2(max(side / FINAL_SIDE, 1)))))
    widths = [min(BASE_WIDTH * 2 ** i, MAX_WIDTH) for i in range(blocks)]
    return widths, f"{blocks} blocks for a {side:g} px map after the stem"


PROGRESSIVE_SCALE = 0.75  # auto: the early epochs at 3/4 of the side (about half the cost)
PROGRESSIVE_FROM = 32  # px: below, a quarter fewer pixels loses detail the network needs


def resolve_progressive(cfg: TrainConfig, in_shape: tuple[int, ...]) -> tuple[float, str]:
    """(the early epochs' side as a share of the full side, why): train.progressive.scale, or
    for auto 0.75 where the network takes any size (a cnn: global pooling) and the images have
    PROGRESSIVE_FROM px to spare, else 1 (off)."""
    if cfg.progressive.scale != "auto":
        return float(cfg.progressive.scale), "train.progressive.scale"
    side = min(in_shape[1:])
    if cfg.model != "cnn":
        return 1.0, f"off: {cfg.model} takes one input size"
    if side < PROGRESSIVE_FROM:
        return 1.0, f"off: {side} px < {PROGRESSIVE_FROM} px"
    early = max(1, round(side * PROGRESSIVE_SCALE))
    return PROGRESSIVE_SCALE, (f"the first {cfg.progressive.share:.0%} of the epochs at {early} px, "
                               f"the rest at {side} px")


def configured_augment(cfg: AugmentConfig, kind: str = "characters") -> Augment | None:
    """The augmentation params give without looking at data (auto: `kind`'s preset)."""
    if not cfg.enabled:
        return None
    preset = PRESETS[kind if cfg.preset == "auto" else cfg.preset]
    names = {f.name for f in dataclasses.fields(Augment)}
    return dataclasses.replace(preset, **{k: v for k, v in cfg.model_dump().items()
                                          if k in names and v is not None})


def budget_epochs(cfg: TrainConfig, n_train: int) -> int:
    """The epochs train.budget.samples buys on this many samples, before min and max."""
    return math.ceil(cfg.budget.samples / max(1, n_train))


def resolve_epochs(cfg: TrainConfig, n_train: int) -> tuple[int, str]:
    """train.epochs, or for auto the epochs train.budget.samples buys on this many samples,
    between train.budget.min_epochs and max_epochs."""
    if cfg.epochs != "auto":
        return int(cfg.epochs), "train.epochs"
    budget = cfg.budget
    wanted = budget_epochs(cfg, n_train)
    epochs = max(budget.min_epochs, min(budget.max_epochs, wanted))
    return epochs, (f"{budget.samples:,} samples / {n_train:,} train samples = {wanted}, "
                    f"within [{budget.min_epochs}, {budget.max_epochs}]")


def resolve_train(cfg: TrainConfig, train: tuple[np.ndarray, np.ndarray],
                  classes: list[str]) -> tuple[TrainConfig, Augment | None, dict]:
    """cfg with epochs and stem resolved, the augmentation to train with, and every decision."""
    x, y = train
    if cfg.augment.preset == "auto":
        kind, kind_why = image_kind(x)
    else:
        kind, kind_why = cfg.augment.preset, "train.augment.preset"
    epochs, epochs_why = resolve_epochs(cfg, len(x))
    augment, augment_record = resolve_augment(cfg.augment, kind, x, y, classes)
    decided = {"kind": kind, "kind_why": kind_why, "epochs": epochs, "epochs_why": epochs_why,
               "augment": augment_record}
    if cfg.epochs == "auto":  # what the budget asked for: a student's epochs follow it
        decided["budget_epochs"] = budget_epochs(cfg, len(x))
    update = {"epochs": epochs}
    if cfg.model == "cnn":
        stride, decided["stem_why"] = ((cfg.cnn.stem_stride, "train.cnn.stem_stride")
                                       if cfg.cnn.stem_stride else stem_stride(kind, x.shape[1:]))
        channels, decided["channels_why"] = auto_channels(cfg, x.shape[1:], stride)
        update["cnn"] = cfg.cnn.model_copy(update={"stem_stride": stride, "channels": channels})
        decided["stem_stride"], decided["channels"] = stride, channels
    scale, why = resolve_progressive(cfg, x.shape[1:])
    decided["progressive"] = {"scale": scale, "share": cfg.progressive.share, "why": why}
    update["progressive"] = cfg.progressive.model_copy(update={"scale": scale})
    return cfg.model_copy(update=update), augment, decided


# below this a network is too small for bf16 to pay on a CPU: measured per training sample,
# GTSRB's 32 px teacher (77 MFLOPs) 0.82 ms in bf16 against 1.51 in fp32, the 8x8 digits
# teacher (4.6) 0.34 against 0.29 and the 28x28 one with a strided stem (14) 0.40 against 0.46
BF16_MIN_MFLOPS = 40.0


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX tiles with AVX-512 BF16)."""
    return torch.cpu._is_amx_tile_supported() and torch.cpu._is_avx512_bf16_supported()


def forward_mflops(model: nn.Module, in_shape: tuple[int, ...]) -> float:
    """Forward MFLOPs of one image (torch's FLOP counter; BatchNorm statistics left untouched)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, *in_shape))
    model.train(was_training)
    return counter.get_total_flops() / 1e6


def resolve_precision(choice: str, model: nn.Module, in_shape: tuple[int, ...],
                      gpu: bool = False) -> tuple[str, str]:
    """(fp32 | bf16, why): train.precision, or for auto bf16 where it is native and pays."""
    if choice != "auto":
        return choice, "train.precision"
    if gpu:
        return "bf16", "GPU"
    if not native_bf16():
        return "fp32", "no native bf16 (AMX) on this CPU"
    mflops = forward_mflops(model, in_shape)
    if mflops < BF16_MIN_MFLOPS:
        return "fp32", f"{mflops:.0f} MFLOPs per image < {BF16_MIN_MFLOPS:.0f}: too small for bf16 to pay"
    return "bf16", f"AMX bf16 on this CPU, {mflops:.0f} MFLOPs per image"


def settings_augment(record: dict | None) -> Augment | None:
    """The Augment a card's record describes (a student trains as its teacher did)."""
    if not record or not record.get("enabled", True):
        return None
    names = {f.name for f in dataclasses.fields(Augment)}
    return Augment(**{k: v for k, v in record.items() if k in names})


def model_options(cfg: TrainConfig, in_shape: tuple[int, ...]) -> dict:
    """The builder options for the configured architecture and these inputs, all resolved (the
    card records them, so the network rebuilds the same whatever the defaults become)."""
    options = {"dropout": cfg.dropout}
    if cfg.model == "cnn":
        options["stem_stride"] = cfg.cnn.stem_stride or auto_stem_stride(in_shape)
        options["channels"] = auto_channels(cfg, in_shape, options["stem_stride"])[0]
    elif cfg.model == "vit":
        options.update(cfg.vit.model_dump())
    return options
