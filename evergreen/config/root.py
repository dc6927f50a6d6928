"""The root config: one field per params.yaml section, and the section names."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from evergreen.config.compress import CompressConfig
from evergreen.config.data import PreprocessConfig, ValidateConfig
from evergreen.config.gan import GanConfig
from evergreen.config.ingest import IngestConfig
from evergreen.config.promote import EvaluateConfig, PromoteConfig, RetrainConfig
from evergreen.config.runtime import ServeConfig, UiConfig, WatchConfig
from evergreen.config.section import Section
from evergreen.config.train import TrainConfig
from evergreen.config.tune import TuneConfig


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
