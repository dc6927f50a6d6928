"""GAN: train a DCGAN, judge it with the champion classifier's features, gate it.

The distance is a Fréchet distance on the penultimate-layer features of a classifier
trained on this very data (a domain-specific FID: no downloaded Inception network).
"""

from __future__ import annotations

import copy
import io
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evergreen.config import GanConfig
from evergreen.errors import EvergreenError
from nets.gan import DISCRIMINATOR, GENERATOR, build_discriminator, build_generator
from tasks.promote import GateResult, check
from tasks.train import Progress, load_checkpoint, normalize, save_checkpoint

log = logging.getLogger("evergreen.gan")
DISTANCE_NAME = "classifier-feature Fréchet distance (domain FID)"


def to_unit(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) -> float in [-1, 1], the generator's tanh range."""
    x = torch.as_tensor(x)
    return x.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1] -> uint8 pixels, as a saved image would hold them."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def gan_plan(cfg: GanConfig, in_shape: tuple[int, ...], n_train: int) -> dict:
    """The auto values resolved for this data: steps, width and batch size.

    steps: `passes` over the train split in batches, within [min_steps, max_steps], so a
    few hundred images still get thousands of generator steps. width: 32 channels at the
    finest map up to 32 px, then halved per doubling of the side (16 at 64 px, 8 at 128 px),
    so the convolutions' multiply-adds (width^2 x side^2) stay level; element-wise work
    still grows with the pixels (on one CPU thread: 0.3 s a step at 32 px, 1.4 s at 128 px).
    """
    batch = min(cfg.batch_size, n_train)
    steps = cfg.steps
    if steps == "auto":
        steps = min(max(math.ceil(cfg.passes * n_train / batch), cfg.min_steps), cfg.max_steps)
    width = cfg.width if cfg.width != "auto" else max(8, min(32, 32 * 32 // in_shape[-1]))
    return {"steps": int(steps), "width": int(width), "batch_size": int(batch)}


def gan_options(cfg: GanConfig, width: int) -> dict:
    return {"latent_dim": cfg.latent_dim, "width": width, "conditional": cfg.conditional}


def adam(model: nn.Module, cfg: GanConfig) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))


def diff_augment(x: torch.Tensor, policy: list[str], gen: torch.Generator) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020): differentiable colour, translation and cutout, per image."""
    n = len(x)
    if "color" in policy:
        x = x + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)  # brightness
        mean = x.mean(1, keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, generator=gen) * 2) + mean  # saturation
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, generator=gen) + 0.5) + mean  # contrast
    if "translation" in policy:
        x = translate(x, ratio=0.125, gen=gen)
    if "cutout" in policy:
        x = cutout(x, ratio=0.5, gen=gen)
    return x


def translate(x: torch.Tensor, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ratio x its side, filling with 0 (mid-grey in [-1, 1])."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), generator=gen)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=gen)
    b, i, j = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
    i, j = (i + dy + 1).clamp(0, h + 1), (j + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # (N, H+2, W+2, C)
    return padded[b, i, j].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Zero one square of ratio x the side at a random place in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen)
    left = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen)
    b, i, j = torch.meshgrid(torch.arange(n), torch.arange(ch), torch.arange(cw), indexing="ij")
    mask = torch.ones(n, h, w)
    mask[b, (i + top - ch // 2).clamp(0, h - 1), (j + left - cw // 2).clamp(0, w - 1)] = 0
    return x * mask.unsqueeze(1)


def class_loss(class_logits: torch.Tensor | None, y: torch.Tensor | None, weight: float):
    """AC-GAN: cross-entropy of the discriminator's class head (0 when unconditional)."""
    if class_logits is None or not weight:
        return 0.0
    return weight * F.cross_entropy(class_logits, y)


def discriminator_loss(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None,
                       fake_y: torch.Tensor | None, cfg: GanConfig,
                       gen: torch.Generator) -> tuple[torch.Tensor, float, float]:
    """Hinge loss on augmented reals and fakes + the class loss on reals.

    Returns (loss, mean D score on reals, on fakes). The class head learns from real images
    only, so fakes cannot teach it their mistakes.
    """
    (real_logits, real_classes) = d.score(diff_augment(real, cfg.augment, gen), y)
    fake_logits, _ = d.score(diff_augment(fake.detach(), cfg.augment, gen), fake_y)
    loss = (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
            + class_loss(real_classes, y, cfg.class_loss_weight))
    return loss, real_logits.mean().item(), fake_logits.mean().item()


def generator_loss(d: nn.Module, fake: torch.Tensor, y: torch.Tensor | None, cfg: GanConfig,
                   gen: torch.Generator) -> torch.Tensor:
    """The hinge generator loss (raise D's score of the fakes) + the requested class's loss."""
    logits, classes = d.score(diff_augment(fake, cfg.augment, gen), y)
    return -logits.mean() + class_loss(classes, y, cfg.class_loss_weight)


def paired(labels: torch.Tensor | None) -> torch.Tensor | None:
    """The batch's labels with the second half repeating the first: fakes i and i + n/2 share one."""
    if labels is None:
        return None
    half = len(labels) // 2
    out = labels.clone()
    out[half:2 * half] = labels[:half]
    return out


def mode_seeking_loss(z: torch.Tensor, fake: torch.Tensor, cfg: GanConfig):
    """MSGAN: penalise fakes i, i + n/2 (same class, other z) for being alike (intra-class collapse)."""
    half = len(z) // 2
    if not cfg.mode_seeking_weight or half == 0:
        return 0.0
    dz = (z[:half] - z[half:2 * half]).abs().mean(1)
    dx = (fake[:half] - fake[half:2 * half]).abs().flatten(1).mean(1)
    return cfg.mode_seeking_weight / ((dx / dz).mean() + 1e-5)


@torch.no_grad()
def ema_update(ema: nn.Module, g: nn.Module, decay: float, step: int) -> None:
    """Move the averaged generator towards g (decay warmed up over the first steps).

    BatchNorm running statistics are copied here and re-estimated for the average at the
    end (`recalibrate_batchnorm`).
    """
    rate = 1.0 - min(decay, (1 + step) / (10 + step))
    for avg, live in zip(ema.parameters(), g.parameters(), strict=True):
        avg.lerp_(live, rate)
    for avg, live in zip(ema.buffers(), g.buffers(), strict=True):
        avg.copy_(live)


@torch.no_grad()
def recalibrate_batchnorm(g: nn.Module, y: torch.Tensor | None, gen: torch.Generator,
                          batches: int = 20, batch: int = 64) -> nn.Module:
    """Re-estimate the BatchNorm statistics of g's own weights (the EMA's differ from the live G's).

    Labels are drawn from y (see `batchnorm_labels`), so classes weigh as they did in training.
    """
    norms = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    g.train()
    for _ in range(batches):
        labels = None if y is None else y[torch.randint(0, len(y), (batch,), generator=gen)]
        g(torch.randn(batch, g.latent_dim, generator=gen), labels)
    for m in norms:
        m.momentum = 0.1
    return g.eval()


def train_step(parts: dict, real: torch.Tensor, labels: torch.Tensor | None, cfg: GanConfig,
               gen: torch.Generator, step: int) -> np.ndarray:
    """One discriminator step, one generator step, the EMA: [d_loss, g_loss, D(real), D(fake)]."""
    g, d = parts["g"], parts["d"]
    z, fake_labels = torch.randn(len(real), cfg.latent_dim, generator=gen), paired(labels)
    fake = g(z, fake_labels)
    d_loss, d_real, d_fake = discriminator_loss(d, real, fake, labels, fake_labels, cfg, gen)
    parts["opt_d"].zero_grad(set_to_none=True)
    d_loss.backward()
    parts["opt_d"].step()
    g_loss = generator_loss(d, fake, fake_labels, cfg, gen) + mode_seeking_loss(z, fake, cfg)
    parts["opt_g"].zero_grad(set_to_none=True)
    g_loss.backward()
    parts["opt_g"].step()
    ema_update(parts["ema"], g, cfg.ema_decay, step)
    return np.array([d_loss.item(), g_loss.item(), d_real, d_fake])


def real_batch(x: torch.Tensor, y: torch.Tensor, size: int, cfg: GanConfig,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A random batch (a function of the RNG alone, so a resume continues it): without repeats,
    or, conditional with gan.balance_classes, classes drawn uniformly and then an image of each."""
    if cfg.conditional and cfg.balance_classes:
        idx = balanced_indices(y, size, gen)
        return x[idx], y[idx]
    idx = torch.randperm(len(x), generator=gen)[:size]
    return x[idx], (y[idx] if cfg.conditional else None)


def balanced_indices(y: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """`size` indices into y whose classes are uniform over those present: the fakes take the
    reals' labels, so a class with a tenth of the images (GTSRB: 210 against 2,250) still gets
    its share of generator steps, as the gates ask every class for the same share."""
    order = torch.argsort(y, stable=True)  # indices grouped by class
    counts = torch.bincount(y)
    starts = torch.cumsum(counts, 0) - counts
    present = torch.nonzero(counts).flatten()
    cls = present[torch.randint(0, len(present), (size,), generator=gen)]
    within = (torch.rand(size, generator=gen) * counts[cls]).long().clamp_max(counts[cls] - 1)
    return order[starts[cls] + within]


def batchnorm_labels(y: torch.Tensor, cfg: GanConfig) -> torch.Tensor | None:
    """The labels the EMA generator's BatchNorm statistics are re-estimated on: as training drew
    them (uniform over the classes present when balanced, else the train split's own)."""
    if not cfg.conditional:
        return None
    return torch.unique(y) if cfg.balance_classes else y


CHECKPOINTED = ("g", "d", "ema", "opt_g", "opt_d")
STATE = {"history": [], "step": 0, "seconds": 0.0, "stopped_by": None}


def train_gan(train: tuple[np.ndarray, np.ndarray], classes: list[str], cfg: GanConfig,
              checkpoint: Path | None = None, checkpoint_key: str = "", every: int = 100,
              clock=time.perf_counter):
    """Fit the GAN on the train split for its step budget; returns (EMA generator, card, history).

    Fixed seed; a history row and a checkpoint every `every` steps, resumed when its key
    matches this run. gan.minutes stops at the first row past the wall-clock cap.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    in_shape = tuple(int(d) for d in train[0].shape[1:])
    plan = gan_plan(cfg, in_shape, len(train[0]))
    parts = build_parts(in_shape, len(classes), cfg, plan["width"])
    x, y = to_unit(train[0]), torch.from_numpy(train[1]).long()
    state = resume(parts, gen, checkpoint, checkpoint_key)
    began = clock() - state["seconds"]
    progress = Progress("gan", math.ceil(plan["steps"] / every))
    while state["step"] < plan["steps"] and state["stopped_by"] is None:
        chunk = min(every, plan["steps"] - state["step"])
        sums = sum(train_step(parts, *real_batch(x, y, plan["batch_size"], cfg, gen), cfg, gen,
                              state["step"] + k) for k in range(chunk))
        state["step"] += chunk
        state["seconds"] = clock() - began
        if cfg.minutes is not None and state["seconds"] >= cfg.minutes * 60:
            state["stopped_by"] = "minutes"
        log_row(state, plan, (sums / chunk).round(6).tolist(), progress)
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"key": checkpoint_key, **state, "gen": gen.get_state(),
                                         "rng": torch.get_rng_state(),
                                         **{k: parts[k].state_dict() for k in CHECKPOINTED}})
    progress.close()
    g = recalibrate_batchnorm(parts["ema"], batchnorm_labels(y, cfg),
                              torch.Generator().manual_seed(cfg.seed))
    return g, generator_card(in_shape, classes, cfg, {**plan, **state}), state["history"]


def build_parts(in_shape: tuple[int, ...], n_classes: int, cfg: GanConfig, width: int) -> dict:
    """Generator, discriminator, the generator's EMA and both optimisers."""
    g = build_generator(in_shape, n_classes, **gan_options(cfg, width))
    d = build_discriminator(in_shape, n_classes, **gan_options(cfg, width))
    return {"g": g, "d": d, "ema": copy.deepcopy(g), "opt_g": adam(g, cfg), "opt_d": adam(d, cfg)}


def resume(parts: dict, gen: torch.Generator, checkpoint: Path | None, key: str) -> dict:
    """The training state: the checkpoint's when its key matches (parts and RNGs restored)."""
    resumed = load_checkpoint(checkpoint, key)
    if not resumed:
        return copy.deepcopy(STATE)
    for name in CHECKPOINTED:
        parts[name].load_state_dict(resumed[name])
    gen.set_state(resumed["gen"])
    torch.set_rng_state(resumed["rng"])
    log.info("gan: resumed from step %d", resumed["step"])
    return {k: resumed[k] for k in STATE}


def log_row(state: dict, plan: dict, means: list[float], progress) -> None:
    """Refuse a diverged stretch, else append its means to the history, the log and the bar."""
    step = state["step"]
    row = {"step": step, **dict(zip(("d_loss", "g_loss", "d_real", "d_fake"), means, strict=True))}
    if not all(math.isfinite(v) for v in row.values()):
        raise FloatingPointError(f"gan: loss became {row} at step {step}; lower gan.lr")
    state["history"].append(row)
    log.info("gan step %d/%d d_loss=%.4f g_loss=%.4f D(real)=%.3f D(fake)=%.3f (%.0f s)", step,
             plan["steps"], row["d_loss"], row["g_loss"], row["d_real"], row["d_fake"],
             state["seconds"])
    progress.advance(f"gan step {step} d_loss={row['d_loss']:.3f} g_loss={row['g_loss']:.3f}")


def generator_card(in_shape: tuple[int, ...], classes: list[str], cfg: GanConfig,
                   run: dict) -> dict:
    """The generator's card: options, pixel scaling, and the auto values this data resolved."""
    return {"arch": GENERATOR, "options": gan_options(cfg, run["width"]),
            "in_shape": list(in_shape), "classes": classes,
            # the pixel scaling the generator's tanh output maps to (x / 127.5 - 1)
            "mean": [0.5] * in_shape[0], "std": [0.5] * in_shape[0],
            "discriminator": DISCRIMINATOR,
            "training": {"steps": run["step"], "planned_steps": run["steps"],
                         "batch_size": run["batch_size"], "width": run["width"],
                         "seconds": round(run["seconds"], 1), "stopped_by": run["stopped_by"],
                         "seed": cfg.seed, "ema_decay": cfg.ema_decay, "augment": cfg.augment,
                         "class_loss_weight": cfg.class_loss_weight,
                         "balance_classes": cfg.balance_classes}}


@torch.no_grad()
def sample_images(g: nn.Module, n: int, seed: int,
                  labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """n uint8 images from a fixed seed; a conditional generator draws each class in turn."""
    g.eval()
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, g.latent_dim, generator=gen)
    if g.conditional and labels is None:
        labels = np.arange(n) % g.num_classes
    y = torch.from_numpy(np.asarray(labels)).long() if g.conditional else None
    out = torch.cat([g(z[i:i + 500], None if y is None else y[i:i + 500])
                     for i in range(0, n, 500)])
    return to_uint8(out), (np.asarray(labels) if g.conditional else None)


def noise_images(n: int, in_shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Uniform random uint8 images: the ceiling's reference point."""
    return np.random.default_rng(seed).integers(0, 256, (n, *in_shape), dtype=np.uint8)


def last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise EvergreenError(f"{type(model).__name__}: no Linear layer to take features from")
    return linears[-1]


@torch.no_grad()
def penultimate_features(model: nn.Module, card: dict, x: np.ndarray,
                         batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(features, class probabilities): the input of the classifier's last Linear, per image."""
    model.eval()
    captured: list[torch.Tensor] = []
    hook = last_linear(model).register_forward_hook(
        lambda _m, inputs, _out: captured.append(inputs[0].detach().flatten(1)))
    try:
        inputs = normalize(torch.from_numpy(x), card["mean"], card["std"])
        logits = torch.cat([model(inputs[i:i + batch]) for i in range(0, len(inputs), batch)])
    finally:
        hook.remove()
    return torch.cat(captured).double().numpy(), torch.softmax(logits, 1).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(Sa + Sb - 2 (Sa Sb)^1/2) between two feature sets (N, F)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # Tr((Sa Sb)^1/2) = sum of sqrt(eigenvalues) of the symmetric Sa^1/2 Sb Sa^1/2
    w, v = np.linalg.eigh(s_a)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root @ s_b @ root
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_cross)


def coverage(proba: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Share of the samples the classifier assigns to each class (uniform: 1 / classes)."""
    counts = np.bincount(proba.argmax(1), minlength=len(classes))
    return {c: round(float(n / len(proba)), 6) for c, n in zip(classes, counts, strict=True)}


def evaluate_generator(g: nn.Module, classifier: nn.Module, clf_card: dict,
                       train: np.ndarray, heldout: np.ndarray, cfg: GanConfig) -> dict:
    """Distance of generated samples to the train split, with its floor and ceiling.

    floor: held-out real images (val + test); ceiling: uniform noise images.
    """
    reference, _ = penultimate_features(classifier, clf_card, train)
    fakes, requested = sample_images(g, cfg.samples, cfg.seed)
    fake_features, proba = penultimate_features(classifier, clf_card, fakes)
    floor = frechet_distance(penultimate_features(classifier, clf_card, heldout)[0], reference)
    noise = noise_images(cfg.samples, tuple(train.shape[1:]), cfg.seed)
    ceiling = frechet_distance(penultimate_features(classifier, clf_card, noise)[0], reference)
    distance = frechet_distance(fake_features, reference)
    classes = clf_card["classes"]
    report = {"metric": DISTANCE_NAME, "distance": round(distance, 6), "floor": round(floor, 6),
              "ceiling": round(ceiling, 6), "distance_to_ceiling": round(distance / ceiling, 6),
              "coverage": coverage(proba, classes),
              "samples": {"generated": cfg.samples, "reference_train": len(train),
                          "floor_heldout": len(heldout), "ceiling_noise": cfg.samples},
              "feature_dim": int(reference.shape[1])}
    report["min_class_share_vs_uniform"] = round(min(report["coverage"].values()) * len(classes), 6)
    if requested is not None:  # the classifier agrees with the requested class
        report["conditional_accuracy"] = round(float((proba.argmax(1) == requested).mean()), 6)
    return report, fakes, requested


def champion_distance(g: nn.Module, classifier: nn.Module, clf_card: dict,
                      train: np.ndarray, cfg: GanConfig) -> float:
    """The champion generator's distance under the same extractor, reference and seed."""
    reference, _ = penultimate_features(classifier, clf_card, train)
    fakes, _ = sample_images(g, cfg.samples, cfg.seed)
    return frechet_distance(penultimate_features(classifier, clf_card, fakes)[0], reference)


def gan_gates(report: dict, champion: float | None, cfg: GanConfig) -> list[GateResult]:
    """Distance against the noise ceiling (and an absolute cap), coverage, the champion."""
    gates = [check("max_distance_ratio", report["distance_to_ceiling"], "<=", cfg.max_distance_ratio)]
    if cfg.max_distance is not None:
        gates.append(check("max_distance", report["distance"], "<=", cfg.max_distance))
    gates.append(check("min_class_coverage", report["min_class_share_vs_uniform"], ">=",
                       cfg.min_coverage_ratio))
    if champion is not None:
        gates.append(check("not_worse_than_champion", report["distance"], "<=",
                           champion * (1 + cfg.champion_tolerance)))
    return gates


def sample_grid_png(images: np.ndarray, columns: int, scale: int | None = None) -> bytes:
    """uint8 images (N, C, H, W) tiled row by row with 1-pixel gaps, upscaled, as PNG bytes."""
    from PIL import Image

    n, c, h, w = images.shape
    rows = math.ceil(n / columns)
    scale = scale or max(1, 48 // max(h, w))
    grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, c), 64, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + col * (w + 1):1 + col * (w + 1) + w] = \
            img.transpose(1, 2, 0)
    pil = Image.fromarray(grid[..., 0] if c == 1 else grid)
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def grid_samples(g: nn.Module, classes: list[str], seed: int, per_row: int = 10) -> np.ndarray:
    """Images for the grid: one row per class (conditional, up to 10 classes) or an 8 x 8 block."""
    if g.conditional:
        shown = min(len(classes), 10)
        labels = np.repeat(np.arange(shown), per_row)
        return sample_images(g, len(labels), seed, labels)[0]
    return sample_images(g, 64, seed)[0]


def store_generator(registry: dict, model_dir: Path, versions_dir: Path, relative: str,
                    sha256: str) -> str:
    """Copy the generator to versions_dir/<g-n> (temp dir, then rename); returns the version."""
    known = next((v for v, info in registry["versions"].items() if info["sha256"] == sha256), None)
    if known:
        return known
    version = f"g{len(registry['versions']) + 1}"
    try:
        versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=versions_dir, prefix=f".{version}."))
        for f in model_dir.iterdir():
            shutil.copy2(f, tmp / f.name)
        tmp.replace(versions_dir / version)
    except OSError as exc:
        raise EvergreenError(f"{versions_dir / version}: cannot store the generator: "
                             f"{exc.strerror}") from None
    registry["versions"][version] = {"sha256": sha256, "path": f"{relative}/{version}"}
    return version
