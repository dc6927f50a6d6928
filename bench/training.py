"""Training speed, side by side in one process: the train stage vs plain hand-written loops.

The anchor is the loop a PyTorch user writes from the tutorials: a Dataset whose
__getitem__ turns one uint8 image into a normalized float tensor and warps it with a
random affine transform (what torchvision's RandomAffine does to a tensor: one
affine_grid + grid_sample per image), a DataLoader (shuffle, num_workers=0: on 2 cores a
worker process would take a core from the training threads) collating batches, Adam,
and a validation pass per epoch. Same network, batch size, data, augmentation ranges,
optimizer settings and thread count as the train stage.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.report import entry

GOAL_THROUGHPUT = 1.5  # train stage images/s over the plain loop's
GOAL_TIME_RATIO = 0.5  # teacher's time to 98% over the reference's 10 epochs
TARGET = 0.98


class WarpedImages(torch.utils.data.Dataset):
    """uint8 (N, C, H, W) images, normalized and randomly warped one at a time."""

    def __init__(self, x: np.ndarray, y: np.ndarray, norm, augment=None):
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.mean = torch.tensor(norm[0]).view(-1, 1, 1)
        self.std = torch.tensor(norm[1]).view(-1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = (self.x[i].float() / 255.0 - self.mean) / self.std
        if self.augment is not None:
            img = self.warp(img, self.augment)
        return img, self.y[i]

    @staticmethod
    def warp(img: torch.Tensor, aug) -> torch.Tensor:
        r = lambda: float(torch.rand(1)) * 2 - 1  # noqa: E731 - uniform in [-1, 1)
        angle, scale = r() * math.radians(aug.rotation), 1 + r() * aug.scale
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        theta = torch.tensor([[[cos, -sin, r() * aug.shift * 2], [sin, cos, r() * aug.shift * 2]]])
        grid = F.affine_grid(theta, [1, *img.shape], align_corners=False)
        return F.grid_sample(img[None], grid, padding_mode="border", align_corners=False)[0]


def plain_fit(model, train, val, norm, epochs: int, batch: int, opt: torch.optim.Optimizer,
              augment=None, on_epoch=None) -> float:
    """The hand-written loop; returns its wall time in seconds."""
    loader = torch.utils.data.DataLoader(WarpedImages(*train, norm, augment), batch_size=batch,
                                         shuffle=True)
    val_loader = torch.utils.data.DataLoader(WarpedImages(*val, norm), batch_size=batch)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in val_loader:
                correct += int((model(xb).argmax(1) == yb).sum())
        if on_epoch:
            on_epoch(epoch, correct / len(val[1]), time.perf_counter() - start)
    return time.perf_counter() - start


def stage_fit(train, val, classes, norm, cfg, on_epoch=None):
    """tasks.train.fit as the train stage runs it; returns (seconds, history)."""
    from nets import build_model
    from tasks.train import FitSettings, fit, model_options

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, tuple(train[0].shape[1:]), len(classes),
                        **model_options(cfg, train[0].shape[1:]))
    start = time.perf_counter()
    _, history = fit(model, train, val, norm, FitSettings.from_train(cfg), on_epoch=on_epoch)
    return time.perf_counter() - start, history


def default_train(epochs: int, threads: int, **changes):
    from evergreen.config import TrainConfig

    base = TrainConfig().model_dump()
    base.update(epochs=epochs, threads=threads, **changes)
    base["early_stopping"] = {"patience": epochs + 1, "min_delta": 0.0}  # time every epoch
    return TrainConfig.model_validate(base)


def train_throughput(quick: bool, scratch=None) -> dict:
    """Images/s of the train stage vs the plain loop on the default data, alternated A/B."""
    from bench.ddp_throughput import digits_splits
    from nets import build_model
    from tasks.train import model_options
    from tasks.train.adapt import configured_augment

    threads = torch.get_num_threads()
    epochs, rounds = (1, 1) if quick else (3, 3)
    train, val, classes, norm = digits_splits()
    cfg = default_train(epochs, threads)

    def plain_seconds(settings) -> float:
        torch.manual_seed(settings.seed)
        model = build_model(settings.model, tuple(train[0].shape[1:]), len(classes),
                            **model_options(settings, train[0].shape[1:]))
        opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.l2)
        return plain_fit(model, train, val, norm, settings.epochs, settings.batch_size, opt,
                         configured_augment(settings.augment))

    # untimed warm-up of both: oneDNN builds its kernels for each shape on first use, a cost
    # the side that happened to run first would otherwise pay alone
    stage_fit(train, val, classes, norm, default_train(1, threads))
    plain_seconds(default_train(1, threads))
    stage, plain = [], []
    for _ in range(rounds):  # interleaved, so a burst of load hits both sides alike
        seconds, _ = stage_fit(train, val, classes, norm, cfg)
        stage.append(len(train[0]) * epochs / seconds)
        plain.append(len(train[0]) * epochs / plain_seconds(cfg))
    s, p = float(np.median(stage)), float(np.median(plain))
    return {"train_throughput_vs_plain_loop": entry(
        s / p, "ratio", f"plain loop {p:.0f} images/s", f">= {GOAL_THROUGHPUT}", s / p >= GOAL_THROUGHPUT,
        stage_images_per_s=round(s, 1), plain_images_per_s=round(p, 1), threads=threads,
        model=cfg.model, batch_size=cfg.batch_size, epochs=epochs, rounds=rounds,
        train_samples=len(train[0]), data="bundled digits 8x8, augmentation on")}


def time_to_accuracy(quick: bool, scratch=None) -> dict:
    """Default teacher (train stage) to 98% test accuracy vs the reference net's 10 epochs.

    Reference: the seed's network (Conv 32 3x3, MaxPool, Dense 64, softmax), Adam at
    Keras's default lr 1e-3, batch 32, 10 epochs, test accuracy after each epoch (Keras's
    validation_data), in the plain loop. Both see the same 28x28 MNIST-format set: generated
    from the bundled digits, or the IDX set `evergreen bench --mnist DIR` names (all of it;
    its first 1,000/300 images with --quick).
    """
    import os

    from bench.data import MNIST_ENV, idx_set, mnist_like
    from nets import build_model
    from tasks.preprocess import channel_stats

    n_train, n_test, ref_epochs, teacher_epochs = (1000, 300, 2, 1) if quick else (10000, 2000, 10, 2)
    if os.environ.get(MNIST_ENV):
        folder = Path(os.environ[MNIST_ENV])
        train, test = idx_set(folder, n_train if quick else None, n_test if quick else None)
        data = f"MNIST-format IDX set {folder}"
    else:
        train, test = mnist_like(n_train, n_test)
        data = "28x28 MNIST-format, generated from the bundled digits (bench/data.py)"
    n_classes = int(max(train[1].max(), test[1].max())) + 1
    norm = channel_stats(train[0])
    ref_curve = []
    torch.manual_seed(0)
    ref = build_model("seed_cnn", tuple(train[0].shape[1:]), n_classes)
    ref_s = plain_fit(ref, train, test, norm, ref_epochs, 32, torch.optim.Adam(ref.parameters(), 1e-3),
                      on_epoch=lambda e, acc, t: ref_curve.append((e, acc, t)))
    curve, start = [], time.perf_counter()
    stage_s, history = stage_fit(train, test, [str(c) for c in range(n_classes)], norm,
                                 default_train(teacher_epochs, torch.get_num_threads()),
                                 on_epoch=lambda row, _: curve.append(
                                     (row["epoch"], row["val_acc"], time.perf_counter() - start)))
    hit = next((t for _, acc, t in curve if acc >= TARGET), None)
    ratio = None if hit is None else hit / ref_s
    final, ref_final = curve[-1][1], ref_curve[-1][1]
    return {"time_to_98_vs_reference": entry(
        ratio, "ratio", f"reference {ref_epochs} epochs {ref_s:.1f} s, final acc {ref_final:.4f}",
        f"<= {GOAL_TIME_RATIO} and higher final accuracy",
        ratio is not None and ratio <= GOAL_TIME_RATIO and final > ref_final,
        teacher_seconds_to_98=None if hit is None else round(hit, 2),
        teacher_final_accuracy=final, teacher_epochs=len(history), teacher_seconds=round(stage_s, 2),
        teacher_curve=[[e, a, round(t, 2)] for e, a, t in curve],
        reference_seconds=round(ref_s, 2), reference_final_accuracy=ref_final,
        reference_curve=[[e, a, round(t, 2)] for e, a, t in ref_curve],
        train_samples=len(train[0]), test_samples=len(test[0]), data=data)}
