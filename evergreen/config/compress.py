"""The compress section: pruning, quantization, distillation and the budget."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from evergreen.config.section import Section


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
        "teacher", description="when no variant fits, or the selected one fails promote's "
        "quality gates (null model, min accuracy and F1) where the teacher passes them: the "
        "teacher is the candidate, or none is")
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
