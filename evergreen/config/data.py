"""The validate and preprocess sections: data checks and the split."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from evergreen.config.section import Section


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
