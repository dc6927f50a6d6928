"""Typed config: one pydantic model per params.yaml section, unknown keys rejected."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evergreen.errors import ConfigError


class Section(BaseModel):
    # strict: `epochs: true` or `lr: "fast"` is an error, not a silent coercion
    # allow_inf_nan: `lr: .inf` or `nan` is an error, not a run that trains on nonsense
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True,
                              allow_inf_nan=False)


class IngestConfig(Section):
    """Where data comes from when the dataset is empty, and how images are read."""

    source: str = Field("digits", description="'digits' or a path (folder, IDX, NPZ, CSV, archive)")
    channels: Literal["auto", "gray", "rgb"] = Field(
        "auto", description="auto: RGB when any image has colour (gray ones expanded), else gray; "
        "a dataset's later batches follow its first")
    image_size: Literal["auto"] | list[int] = Field(
        "auto", description="[H, W], or auto: the images' own size when they share one, else the "
        "median height and width (square when close), at most max_auto_side; later batches "
        "follow the dataset")
    resize: Literal["stretch", "pad", "crop"] = Field(
        "stretch", description="how an image of another shape fits image_size: stretch, pad "
        "(letterbox with alpha_background) or crop (centre)")
    max_auto_side: int = Field(128, ge=4, le=4096,
                               description="image_size auto never picks a side above this")
    alpha_background: list[int] = Field(
        default_factory=lambda: [255, 255, 255], min_length=3, max_length=3,
        description="RGB colour transparent pixels are composited over (and pad's fill)")
    labels_csv: str | None = Field(
        None, description="CSV mapping file name to label for a folder of images (found beside "
        "the images or one folder up when null)")
    crop_roi: bool = Field(False, description="crop to the labels CSV's ROI columns (X1, Y1, X2, Y2, "
                           "inclusive, as GTSRB's Roi.X1 ...)")
    on_bad_sample: Literal["reject", "drop"] = Field(
        "reject", description="a bad sample rejects the whole batch, or is dropped and reported")
    csv_label_column: str = Field("label", min_length=1, description="CSV column holding the label")
    max_image_pixels: int = Field(16_777_216, ge=1, description="larger headers are refused")
    max_batch_pixels: int = Field(
        500_000_000, ge=1, description="pixel values (N x C x H x W, bytes as uint8) a batch may "
        "hold, checked from the headers before decoding, for every format; split larger sources "
        "into batches")
    max_csv_line_bytes: int = Field(4_194_304, ge=64, description="a longer CSV line is refused")
    read_timeout_s: float = Field(300.0, ge=0.0, le=86_400.0,
                                  description="longest read of one file; 0 = none")
    max_archive_bytes: int = Field(2_000_000_000, ge=1, description="uncompressed archive cap")
    max_archive_members: int = Field(1_000_000, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: Any) -> Any:
        """Workspaces from before `channels`: `grayscale: true|false|null`, `image_size: null`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "grayscale" in data:
            legacy = data.pop("grayscale")
            if legacy is not None and not isinstance(legacy, bool):
                raise ValueError(f"grayscale (deprecated; use channels): expected true, false or "
                                 f"null, got {legacy!r}")
            if legacy is not None:
                data.setdefault("channels", "gray" if legacy else "rgb")
        if "image_size" in data and data["image_size"] is None:
            data["image_size"] = "auto"
        return data

    @field_validator("image_size")
    @classmethod
    def _size_pair(cls, value: Any) -> Any:
        if isinstance(value, list) and (len(value) != 2 or not all(1 <= v <= 65536 for v in value)):
            raise ValueError(f"expected auto or [H, W] with sides in 1..65536, got {value}")
        return value

    @field_validator("alpha_background")
    @classmethod
    def _colour(cls, value: list[int]) -> list[int]:
        if not all(0 <= v <= 255 for v in value):
            raise ValueError(f"expected [R, G, B] in 0..255, got {value}")
        return value


class ValidateConfig(Section):
    """Expectations over the metadata table."""

    min_samples_per_class: int = Field(10, ge=1)
    # 3.0 refused GTSRB as published (its classes run from 210 to 2,250 photos: 10.7x); the
    # gate is for a dataset broken by a near-empty class, not for a naturally skewed one
    max_class_imbalance: float = Field(50.0, ge=1.0, description="largest / smallest class")
    min_pixel: int = Field(0, ge=0, le=255)
    max_pixel: int = Field(255, ge=0, le=255)
    new_classes: Literal["reject", "allow"] = Field(
        "reject", description="a batch label outside the dataset's classes")
    min_batch_size: int = Field(1, ge=1)
    max_duplicate_rate: float = Field(0.5, ge=0.0, le=1.0, description="share already present")
    min_label_shift_pvalue: float = Field(
        0.001, ge=0.0, le=1.0, description="chi-square test of the batch's label counts")
    max_pixel_psi: float = Field(0.25, ge=0.0, description="PSI of per-sample mean intensity")
    on_drift: Literal["warn", "refuse"] = Field(
        "warn", description="distribution shift of correctly formed data (pixel PSI, label "
        "shift): warn lands the batch with its figures and lets the retrain and the gates decide; "
        "refuse quarantines it. Integrity failures (shape, corrupt files, unknown classes, "
        "duplicates, size) refuse either way")


class PreprocessConfig(Section):
    """Hash-based split fractions; the rest is train."""

    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_salt: str = "evergreen"
    group_split: Literal["auto", "off"] = Field(
        "auto", description="auto: a batch whose file names number the members of groups "
        "(<group>_<n>: frames of one track or video) is split by group, so near-copies never "
        "sit on both sides; off: every sample by its content hash")
    group_pattern: str | None = Field(
        None, description="regex on the file stem with a named group `group` (null: "
        "<prefix><sep><number>)")

    @field_validator("group_pattern")
    @classmethod
    def _pattern_names_a_group(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compiled = re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
            if "group" not in compiled.groupindex:
                raise ValueError("needs a named group (?P<group>...)")
        return value

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> PreprocessConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must stay below 0.9")
        return self


class AugmentConfig(Section):
    """Random warps per training sample. `preset` picks the ranges by kind of image; any knob set
    here overrides its preset value (null: the preset's)."""

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
    """Progressive resizing: the first epochs see smaller images, which cost the square of the
    side less, and the last ones the full size, so the network ends at the size it serves."""

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

    @model_validator(mode="after")
    def _resizable(self) -> TrainConfig:
        scale = self.progressive.scale
        if scale != "auto" and scale < 1.0 and self.model != "cnn":
            raise ValueError(f"progressive.scale {scale} needs model cnn (global pooling takes "
                             f"any size); {self.model} takes one input size: set it to 1 or auto")
        return self


class PruneConfig(Section):
    """Structured (channel) pruning of the cnn teacher with Torch-Pruning, then a fine-tune."""

    ratios: list[float | Literal["auto"]] = Field(
        default_factory=lambda: ["auto", 0.75],
        description="share of each conv layer's channels removed; auto: the mildest share whose "
        "pruned network is within compress.select.max_size_ratio of the teacher's weights (0.5 "
        "without a size budget)")
    round_to: int = Field(8, ge=1, description="pruned layers keep a multiple of this many "
                          "channels (nearest), which the CPU's vector units run at full speed: "
                          "GTSRB's teacher pruned to 14/29/58 channels ran 2.45x faster than "
                          "itself, to 16/32/64 3.1x")
    epochs: int = Field(4, ge=0, description="fine-tune epochs after pruning")
    lr: float = Field(0.001, gt=0.0)

    @model_validator(mode="after")
    def _ratios_in_range(self) -> PruneConfig:
        bad = [r for r in self.ratios if r != "auto" and not 0.0 < r < 1.0]
        if bad:
            raise ValueError(f"ratios must lie strictly between 0 and 1, got {bad}")
        return self


class QuantizeConfig(Section):
    """Static int8 (torchao PT2E, X86 quantizer) of the named variants, served by onnxruntime."""

    variants: list[str] = Field(default_factory=lambda: ["pruned", "distilled"],
                                description="variants to quantize, by name (pruned_50) or kind "
                                "(pruned: every pruned one); missing ones are skipped")
    calibration_samples: int = Field(256, ge=1, description="train samples for calibration")
    reduce_range: Literal["auto"] | bool = Field(
        "auto", description="activations in 7 bits (0..127). auto: on a CPU without VNNI, where "
        "onnxruntime's u8s8 int8 kernels saturate at full range (GTSRB's pruned_50 lost 1.8 "
        "points of validation accuracy in int8 on AVX2 at full range, 0.0 at 7 bits)")


class SelectConfig(Section):
    """The budget a compressed variant must meet to become the candidate."""

    max_accuracy_drop: float = Field(0.01, ge=0.0, le=1.0,
                                     description="validation accuracy below the teacher's")
    max_size_ratio: float | None = Field(
        0.25, gt=0.0, description="exported file at most this share of the teacher's (null: off)")
    max_latency_ms: float | None = Field(None, gt=0.0, description="absolute batch-1 p95 in "
                                         "onnxruntime (null: off; speed is judged by min_speedup)")
    max_size_kb: float | None = Field(None, gt=0.0, description="absolute size of the exported "
                                      "file (null: off; size is judged by max_size_ratio)")
    fallback: Literal["teacher", "none"] = Field(
        "teacher", description="when no variant fits: the teacher is the candidate, or none is")
    min_speedup: float = Field(3.0, ge=0.0, description="the teacher's batch-1 p50 latency over "
                               "the variant's, measured side by side (0: no minimum)")
    objective: Literal["accuracy", "latency", "size"] = Field(
        "accuracy", description="among variants in budget: best val accuracy (ties: faster), "
                                "lowest latency or smallest file")
    latency_runs: int = Field(200, ge=10)
    throughput_batch: int = Field(256, ge=1)


class CompressConfig(Section):
    """Variants of the teacher (pruned, distilled, int8), measured, and one selected by budget."""

    student: Literal["auto", "seed_cnn", "cnn", "vit"] = Field(
        "auto", description="auto: the seed's network (seed_cnn) on inputs up to 16 px, above them "
        "the teacher's architecture at 3/8 of its width (seed_cnn's Flatten->Dense grows with the "
        "image: on 28x28 it is larger than the teacher)")
    temperature: float = Field(2.0, gt=0.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the soft-target loss")
    epochs: Literal["auto"] | Annotated[int, Field(ge=1, le=100_000)] = Field(
        "auto", description="the student's epochs; auto: those the teacher's sample "
        "budget asked for, between 1x and 1.5x the teacher's epochs")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.003, gt=0.0)
    l2: float = Field(0.0001, ge=0.0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    augment: bool = True
    seed: int = 0
    control: bool = Field(False, description="also train the student without distillation, to "
                          "measure distillation's gain (a full student training; `evergreen bench "
                          "--only distillation` measures it over 3 seeds)")
    build: Literal["lazy", "all"] = Field(
        "lazy", description="lazy: build the variants mildest first (each pruning ratio from the "
        "smallest, then the students) and stop at the first that fits the budget, as a milder "
        "variant is the more accurate (objective accuracy; a student that is the candidate or "
        "has a control is always trained); all: build every variant")
    prune: PruneConfig = Field(default_factory=PruneConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)


class EvaluateConfig(Section):
    latency_runs: int = Field(200, ge=10)
    throughput_batch: int = Field(256, ge=1)
    null_model_max_iter: int = Field(2000, ge=10)
    null_model_max_samples: int = Field(
        5000, ge=10, description="train images the null model fits on (a seeded sample)")
    null_model_max_side: int = Field(
        16, ge=1, description="larger images are averaged down to this side for the null model")


class PromoteConfig(Section):
    """The gate: significantly better than the null model, the champion, and any absolute
    thresholds a user sets (off by default: what is good enough depends on the data)."""

    candidate: Literal["selected", "student", "teacher"] = Field(
        "selected", description="selected: the variant the compress stage chose by budget")
    null_alpha: float = Field(
        0.05, gt=0.0, le=1.0, description="McNemar level at which the candidate must beat the "
        "scikit-learn null model on paired test predictions (1.0: merely ahead of it)")
    min_accuracy: float | None = Field(None, ge=0.0, le=1.0, description="absolute; null: off")
    min_f1_macro: float | None = Field(None, ge=0.0, le=1.0, description="absolute; null: off")
    max_latency_ms: float | None = Field(
        None, gt=0.0, description="absolute batch-1 p50 (the median of evaluate.latency_runs "
        "calls, robust to a busy neighbour); null: off")
    max_latency_ratio: float | None = Field(
        2.0, gt=0.0, description="batch-1 p50 at most this multiple of the champion's, both "
        "measured side by side in the promote stage; null: off")
    max_size_kb: float | None = Field(None, gt=0.0, description="absolute; null: off")
    champion_tolerance: float = Field(0.005, ge=0.0, description="accuracy a challenger may lose")
    max_class_recall_drop: float = Field(
        0.1, ge=0.0, le=1.0, description="no class's recall may fall more than this vs the champion")
    max_forgetting: float = Field(
        0.01, ge=0.0, le=1.0, description="accuracy drop allowed on the champion's own test split")
    mcnemar_alpha: float = Field(
        0.05, gt=0.0, lt=1.0, description="McNemar's test level for calling a difference an improvement")
    require_improvement: bool = Field(
        False, description="promote only a significant improvement over the champion (McNemar)")


class RetrainConfig(Section):
    """Continual retraining: label-noise screen, warm start with replay, or full training."""

    mode: Literal["warm", "full"] = Field(
        "warm", description="warm: fine-tune the champion's teacher when the classes and "
        "architecture match; full: always train from scratch")
    replay_ratio: float = Field(1.0, ge=0.0, description="old train samples replayed per new one")
    epochs: int = Field(10, ge=1, description="fine-tune epochs of a warm start")
    lr: float = Field(0.001, gt=0.0, description="fine-tune learning rate (cosine schedule)")
    max_label_noise_drop: float = Field(
        0.2, ge=0.0, le=1.0, description="quarantine a batch when the champion's accuracy on it "
        "falls this far below the champion's test accuracy")
    min_scored_samples: int = Field(20, ge=1, description="smaller batches are not scored")


class GanConfig(Section):
    """The gan-pipeline: GAN training, its evaluation by the champion classifier, its gate."""

    steps: Literal["auto"] | Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        "auto", description="generator steps; auto: passes x train size / batch_size, at least "
        "min_steps and at most max_steps")
    passes: float = Field(100.0, gt=0.0, description="steps auto: passes over the train split")
    min_steps: int = Field(2000, ge=1, description="steps auto: the floor (a few hundred images "
                           "still get thousands of steps)")
    max_steps: int = Field(4000, ge=1, description="steps auto: the cap")
    minutes: float | None = Field(None, gt=0.0, description="wall-clock cap on training; the run "
                                  "stops at the first step past it (null: none)")
    batch_size: int = Field(32, ge=2, description="at most the train split's size")
    lr: float = Field(5e-4, gt=0.0, description="Adam, generator and discriminator (5e-4: the "
                      "spectral-norm discriminator learns slowly at 2e-4, and CPU steps are few)")
    beta1: float = Field(0.5, ge=0.0, lt=1.0, description="Adam beta1 (DCGAN: 0.5)")
    latent_dim: int = Field(128, ge=2)
    width: Literal["auto"] | Annotated[int, Field(ge=4, le=1024)] = Field(
        "auto", description="channels of the finest feature map; doubled per halving, capped at "
        "8x; auto: 32 up to 32 px, halved per doubling of the side (16 at 64 px, 8 at 128 px), so "
        "the convolutions' cost stays level")
    conditional: bool = Field(True, description="class-conditional generator and discriminator")
    balance_classes: bool = Field(True, description="conditional: draw each batch's classes "
                                  "uniformly, then an image of each, so rare classes are learnt "
                                  "as well as common ones (the coverage gate asks each class for "
                                  "the same share); false: batches follow the data's proportions")
    class_loss_weight: float = Field(1.0, ge=0.0, description="conditional: weight of the "
                                     "discriminator's auxiliary class loss (AC-GAN); 0 = off")
    mode_seeking_weight: float = Field(1.0, ge=0.0, description="weight of the mode-seeking "
                                       "loss (MSGAN) against intra-class collapse; 0 = off")
    augment: list[Literal["color", "translation", "cutout"]] = Field(
        default_factory=lambda: ["color", "translation", "cutout"],
        description="DiffAugment policy: the same differentiable augmentations on real and "
        "generated images before the discriminator, so it cannot memorise a small set; [] = off")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="the saved generator is an "
                             "exponential moving average of the weights, per step; 0 = the last")
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch threads while training; 0 = torch default "
                         "(every core). With OpenMP's passive waits (the evergreen command sets "
                         "them) two threads ran a 64 px step 1.7x faster than one on 2 quiet "
                         "cores (0.50 against 0.85 s); 1 makes the run the same on any core count")
    samples: int = Field(1000, ge=10, description="generated images evaluated")
    max_distance_ratio: float = Field(0.25, gt=0.0,
                                      description="gate: domain FID / the noise ceiling's")
    max_distance: float | None = Field(None, gt=0.0, description="gate: absolute domain FID")
    min_coverage_ratio: float = Field(0.5, ge=0.0, le=1.0,
                                      description="gate: each class's share of the samples, "
                                      "as a fraction of the uniform share 1/classes")
    champion_tolerance: float = Field(0.0, ge=0.0,
                                      description="relative distance a challenger may lose")

    @model_validator(mode="after")
    def _ordered(self) -> GanConfig:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps {self.min_steps} is above max_steps {self.max_steps}")
        return self


class TuneConfig(Section):
    """`evergreen tune`: an Optuna study over train params, kept in the workspace."""

    trials: int = Field(12, ge=1, le=10_000)
    timeout_s: float | None = Field(900.0, gt=0.0, description="stop starting trials after this")
    pruner: Literal["median", "halving", "none"] = Field(
        "median", description="median: MedianPruner; halving: SuccessiveHalvingPruner")
    seed: int = 0
    epochs: int | None = Field(None, ge=1, description="epochs per trial (null: train's)")
    space: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "train.lr": {"low": 0.0003, "high": 0.01, "log": True},
            "train.l2": {"low": 0.00001, "high": 0.005, "log": True},
            "train.dropout": {"low": 0.0, "high": 0.4},
            "train.batch_size": {"choices": [32, 64, 128]},
        },
        description="param path -> {low, high[, log, step]} (float or int) or {choices: [...]}")


class UiConfig(Section):
    """`evergreen ui`: the local Prefect server (EVERGREEN_UI_HOST / EVERGREEN_UI_PORT win)."""

    host: str = Field("127.0.0.1", min_length=1, description="bind address; loopback keeps it local")
    port: int = Field(4200, ge=1, le=65535)


class WatchConfig(Section):
    """`evergreen watch DIR`: when a drop is complete, and how its retrain starts."""

    marker: str = Field("_READY", min_length=1, pattern=r"^[^/\\]+$",
                        description="a folder drop is complete when it holds this file, "
                                    "a file drop when <file><marker> sits beside it")
    quiet_seconds: float = Field(30.0, gt=0.0, description="...or when nothing in it changed "
                                 "for this long")
    poll_seconds: float = Field(1.0, gt=0.0, description="how often pending drops are re-checked")
    force_polling: bool = Field(False, description="poll the folder instead of OS change "
                                "notifications (network mounts)")
    retrain: Literal["auto", "event", "local"] = Field(
        "auto", description="event: emit evergreen.batch.ingested for the served "
        "continual-retraining deployment; local: retrain in this process; auto: event when "
        "a Prefect server is configured (PREFECT_API_URL), else local")
    lock_wait_seconds: float = Field(3600.0, ge=0.0, description="wait this long for a busy "
                                     "workspace, then leave the drops for the next try")


class ServeConfig(Section):
    """`evergreen serve`: schedules of the training-pipeline and continual-retraining deployments."""

    training_cron: str | None = Field("0 2 * * *", description="training-pipeline schedule "
                                      "(cron); null: none")
    retrain_cron: str | None = Field(None, description="continual-retraining on a schedule too, "
                                     "besides its event trigger")
    timezone: str = Field("UTC", description="IANA zone the cron schedules are read in")
    lock_wait_seconds: float = Field(3600.0, ge=0.0, description="a deployment run waits this "
                                     "long for a busy workspace, then fails (exit 75)")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError("not an IANA zone name (e.g. UTC, Europe/Paris)") from None
        return value


class Config(Section):
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    gan: GanConfig = Field(default_factory=GanConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    ui: UiConfig = Field(default_factory=UiConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    def section(self, name: str) -> Section:
        return self.validate_ if name == "validate" else getattr(self, name)

    def to_params(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# params.yaml's sections, by their params.yaml names (`validate`, whose attribute is validate_)
SECTIONS = tuple(field.alias or name for name, field in Config.model_fields.items())


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a float (YAML 1.2), not as a string, and refuses a key
    given twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` keys may be overridden: that is what they are for
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error follows
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"found duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


class _TooDeep(yaml.YAMLError):
    """Nested deeper than Python's recursion allows."""


def read_yaml(text: str):
    """Parse YAML safely (no object construction), with YAML 1.2 floats; nesting too deep
    for the parser is a YAMLError like any other."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise _TooDeep("nested too deeply") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: where, and what it found."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc).strip().splitlines()[0]
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (exc.problem or exc.context or "unreadable").strip()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (value {_short(err['input'])})"
    if err["type"] == "model_type":  # pydantic says "a valid dictionary or instance of XConfig"
        return f"{key}: expected a section (a mapping of keys), got {_short(err['input'])}"
    return f"{key}: {err['msg']} (got {_short(err['input'])})"


def parse_config(data: dict[str, Any], origin: str = "params.yaml") -> Config:
    """Validate a params mapping; raise ConfigError naming each bad key and value, one a line."""
    try:
        return Config.model_validate(data or {})
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        if len(lines) == 1:
            raise ConfigError(f"{origin}: {lines[0]}") from None
        raise ConfigError(f"{origin}: invalid config:\n  " + "\n  ".join(lines)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (values parsed as YAML) to a copy."""
    data = copy.deepcopy(data)  # not a JSON round trip: params.yaml may hold a date
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {_short(item)}: expected section.key=value")
        if parts[0] not in SECTIONS:
            raise ConfigError(f"--set {_short(item)}: unknown section {_short(parts[0])}, "
                              f"expected one of {', '.join(SECTIONS)}")
        node = data
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {_short(item)}: {'.'.join(parts[:depth + 1])} is "
                                  f"{_short(node)} in params.yaml, not a section")
        node[parts[-1]] = _override_value(item, ".".join(parts), raw)
    return data


def _override_value(item: str, key: str, raw: str) -> Any:
    try:
        return read_yaml(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {_short(item)}: {key}: expected a YAML value, got {_short(raw)} "
                          f"({yaml_problem(exc)}); quote a string: {key}='\"...\"'") from None


def load_config(path: Path, overrides: list[str] | None = None) -> Config:
    """Read params.yaml (safe_load), apply overrides, validate."""
    try:
        data = read_yaml(path.read_text(encoding="utf-8")) if path.exists() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    data = apply_overrides(data or {}, overrides or [])
    return parse_config(data, origin=str(path) + (" with --set" if overrides else ""))


def params_hash(section: BaseModel | dict[str, Any]) -> str:
    """Stable short hash of a config section (or mapping)."""
    data = section.model_dump(mode="json", by_alias=True) if isinstance(section, BaseModel) else section
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def default_params_yaml() -> str:
    """The params.yaml a new workspace starts with: every key at its default."""
    header = "# Evergreen params: one section per stage. Override one run with --set sec.key=val.\n"
    return header + yaml.safe_dump(Config().to_params(), sort_keys=False)
