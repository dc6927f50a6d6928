"""The base of every params.yaml section: strict, unknown keys rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # strict: `epochs: true` or `lr: "fast"` is an error, not a silent coercion
    # allow_inf_nan: `lr: .inf` or `nan` is an error, not a run that trains on nonsense
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True,
                              allow_inf_nan=False)
