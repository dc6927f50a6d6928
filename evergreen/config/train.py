"""The train section and its parts: augmentation, budget, networks, DDP."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from evergreen.config.section import Section


class AugmentConfig(Section):
    """Random warps per training sample: a preset's ranges, each knob set here overriding it."""

    # `preset` picks the ranges by kind of image; a knob left null keeps the preset's value
    enabled: bool = True
    preset: Literal["auto", "characters", "photos"] = Field(
        "auto", description="characters (digits, letters: small affine warps, no flips) or photos "
        "(random-resized crop, mild colour jitter, horizontal flip unless it turns one class into "
        "another); auto decides from the data: one channel of mostly ink and paper is characters")
    shift: float | None = Field(None, ge=0.0, le=0.5, description="max shift, fraction of size")
    rotation: float | None = Field(None, ge=0.0, le=180.0, description="max degrees")
    scale: float | None = Field(None, ge=0.0, le=0.5, description="max relative zoom")
    crop: float | None = Field(None, gt=0.0, le=1.0, description="random-resized crop: smallest "
                               "share of the image's area kept (1: no crop)")
    jitter: float | None = Field(None, ge=0.0, le=1.0, description="brightness, contrast and "
                                 "saturation vary by up to this share")
    hflip: bool | None = Field(None, description="null: photos flip unless a class mirrored looks "
                               "like another class (left/right arrows, letters)")
    vflip: bool = False


class EarlyStoppingConfig(Section):
    # 12, not 8: validation loss swings at the cosine schedule's high early learning rates, and
    # with 8 one seed in three stopped at epoch 16 with 0.981 test accuracy (0.997 with 12)
    patience: int = Field(12, ge=1)
    min_delta: float = Field(0.0, ge=0.0)


class BudgetConfig(Section):
    """What epochs: auto buys: a number of training samples seen, and optionally a wall-clock cap."""

    samples: int = Field(400_000, ge=1, description="samples seen in training (epochs x train "
                         "size): 40 epochs (max_epochs) up to 10k images, 15 of 27k, 10 from 40k")
    min_epochs: int = Field(10, ge=1)
    max_epochs: int = Field(40, ge=1)
    minutes: float | None = Field(None, gt=0.0, description="wall-clock cap: after the first "
                                  "epoch the schedule shrinks to the epochs that fit (null: none)")

    @model_validator(mode="after")
    def _ordered(self) -> BudgetConfig:
        if self.min_epochs > self.max_epochs:
            raise ValueError(f"min_epochs {self.min_epochs} is above max_epochs {self.max_epochs}")
        return self


class ProgressiveConfig(Section):
    """Progressive resizing: the first epochs see smaller images, the last ones the full size."""

    # smaller images cost the square of the side less; the network ends at the size it serves
    scale: Literal["auto"] | Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        "auto", description="the early epochs' image side, a share of the full side (1: off); "
        "auto: 0.75 for a cnn on images of 32 px and more (a 24 px epoch of GTSRB's teacher "
        "costs 0.53 of a 32 px one), 1 otherwise")
    share: float = Field(0.67, ge=0.0, lt=1.0, description="share of the epochs, the first "
                         "ones, at the reduced size")


class CnnConfig(Section):
    channels: Literal["auto"] | Annotated[list[Annotated[int, Field(ge=1, le=4096)]],
                                          Field(min_length=1)] = Field(
        "auto", description="each conv block's width; auto: 32, 64, 128 (doubling, at most 256), "
        "a block more per doubling of the side beyond what three blocks bring down to 4 px "
        "(at most 5). Not narrower on small sets: at 200-280 train images 16-32-64 scored 1.1 "
        "(digits) and 5.4 (faces) points below 32-64-128, mean of 3 seeds")
    stem_stride: Literal[1, 2] | None = Field(
        None, description="stride of the first convolution; null: 2 (a quarter of the first "
        "block's cost) for characters from 16 px and photos from 48 px, else 1")


class VitConfig(Section):
    patch_size: int = Field(2, ge=1)
    dim: int = Field(64, ge=8)
    depth: int = Field(3, ge=1)
    heads: int = Field(4, ge=1)


class DistributedConfig(Section):
    """Data-parallel training (DDP) started by torch's elastic launcher; 1 process trains in-process."""

    nproc_per_node: int = Field(1, ge=1, description="worker processes per machine (one per GPU)")
    nnodes: int = Field(1, ge=1, description="machines in the job")
    node_rank: int = Field(0, ge=0, description="this machine's index; node 0 hosts the rendezvous")
    rdzv_endpoint: str = Field("127.0.0.1:29400", description="HOST:PORT of the rendezvous (nnodes > 1)")
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto: nccl on GPU, else gloo")
    max_restarts: int = Field(0, ge=0, description="elastic restarts of all workers after a failure")
    sync_batchnorm: bool = Field(False, description="BatchNorm statistics over the global batch: "
                                 "exactly one process's model, at one all-reduce per layer and pass")

    @model_validator(mode="after")
    def _node_rank_in_range(self) -> DistributedConfig:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        if not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):\d+", self.rdzv_endpoint):
            raise ValueError(f"rdzv_endpoint {self.rdzv_endpoint!r} must be HOST:PORT")
        return self

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


class FeedConfig(Section):
    """How training reads the data: the order (tasks.data.sampler), the readers and the
    checkpoints inside an epoch."""

    shuffle_window: int = Field(8192, ge=1, description="samples shuffled together inside a "
                                "stream (a block shuffle over shards stored in random order)")
    streams: Literal["auto"] | Annotated[int, Field(ge=1, le=4096)] = Field(
        "auto", description="contiguous parts of each epoch's order read side by side; every "
        "global batch draws from all of them, and a distributed rank reads its own (shards "
        "apart from those a boundary cuts). auto: one per rank, the fewest cuts; a number pins "
        "the order for every world size that divides it")
    loader_workers: Literal["auto"] | Annotated[int, Field(ge=0, le=64)] = Field(
        "auto", description="DataLoader processes reading batches; auto: none on 2 cores or "
        "fewer, else a quarter of the cores (at most 4)")
    checkpoint_every_s: float = Field(
        120.0, ge=0.0, description="a checkpoint inside an epoch this often (0: after every "
        "batch), so a killed run resumes at the sample it reached")


class TrainConfig(Section):
    """The teacher's training run."""

    model: Literal["seed_cnn", "cnn", "vit"] = "cnn"
    epochs: Literal["auto"] | Annotated[int, Field(ge=1, le=100_000)] = Field(
        "auto", description="auto: what train.budget buys on this dataset, stopped early on a "
        "validation plateau")
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    lr: float = Field(0.003, gt=0.0, le=10.0)
    lr_schedule: Literal["none", "cosine", "step"] = "cosine"
    l1: float = Field(0.0, ge=0.0)
    l2: float = Field(0.0005, ge=0.0, description="weight decay (AdamW)")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch threads per process; 0 = torch default "
                         "(distributed: cores / processes on the machine)")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16: mixed precision (autocast; the weights, optimizer and loss stay "
        "fp32). auto: bf16 on a GPU, and on a CPU that computes bf16 natively (AMX) for a network "
        "of at least 40 MFLOPs per image; fp32 otherwise")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    progressive: ProgressiveConfig = Field(default_factory=ProgressiveConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    cnn: CnnConfig = Field(default_factory=CnnConfig)
    vit: VitConfig = Field(default_factory=VitConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    feed: FeedConfig = Field(default_factory=FeedConfig)

    @model_validator(mode="after")
    def _resizable(self) -> TrainConfig:
        scale = self.progressive.scale
        if scale != "auto" and scale < 1.0 and self.model != "cnn":
            raise ValueError(f"progressive.scale {scale} needs model cnn (global pooling takes "
                             f"any size); {self.model} takes one input size: set it to 1 or auto")
        return self
