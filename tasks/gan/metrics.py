"""Judge a generator: a Fréchet distance on the penultimate-layer features of a classifier
trained on this very data (a domain-specific FID: no downloaded Inception network), with its
floor and ceiling, and the share of samples the classifier gives each class (coverage)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from evergreen.config import GanConfig
from evergreen.errors import EvergreenError
from nets.inputs import normalize
from nets.memory import release_free_memory
from tasks.data import chunks, sample_positions, subset
from tasks.gan.samples import noise_images, sample_images

DISTANCE_NAME = "classifier-feature Fréchet distance (domain FID)"
REFERENCE_SAMPLES = 20_000  # real images per side: features of a bounded sample, as FID's 50k


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier's last Linear layer, whose input is the feature vector."""
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
        logits = []
        for block in chunks(x, batch):
            logits.append(model(normalize(torch.from_numpy(block), card["mean"], card["std"])))
            release_free_memory()
        logits = torch.cat(logits)
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


def reference_sample(x, seed: int):
    """At most REFERENCE_SAMPLES images of x, drawn by seed (all of a smaller set)."""
    return subset(x, sample_positions(len(x), REFERENCE_SAMPLES, seed))


def evaluate_generator(g: nn.Module, classifier: nn.Module, clf_card: dict,
                       train: np.ndarray, heldout: np.ndarray,
                       cfg: GanConfig) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """Distance of generated samples to the train split, with its floor and ceiling; returns
    (report, the samples, their requested classes or None).

    floor: held-out real images (val + test); ceiling: uniform noise images. Real images are a
    seeded sample of at most REFERENCE_SAMPLES per side, read from the shards.
    """
    train, heldout = reference_sample(train, cfg.seed), reference_sample(heldout, cfg.seed + 1)
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
    reference, _ = penultimate_features(classifier, clf_card, reference_sample(train, cfg.seed))
    fakes, _ = sample_images(g, cfg.samples, cfg.seed)
    return frechet_distance(penultimate_features(classifier, clf_card, fakes)[0], reference)
