"""The evaluate, promote and retrain sections: measures, gates, retraining."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from evergreen.config.section import Section


class EvaluateConfig(Section):
    latency_runs: int = Field(200, ge=10)
    throughput_batch: int = Field(256, ge=1)
    null_model_max_iter: int = Field(2000, ge=10)
    null_model_max_samples: int = Field(
        5000, ge=10, description="train images the null model fits on (a seeded sample)")
    null_model_max_side: int = Field(
        16, ge=1, description="larger images are averaged down to this side for the null model")


class PromoteConfig(Section):
    """The gate: significantly better than the null model and the champion, within set limits."""

    # absolute thresholds are off by default: what is good enough depends on the data
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
