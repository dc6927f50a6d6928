"""Typed config: one pydantic model per params.yaml section, unknown keys rejected."""

from evergreen.config.compress import CompressConfig, PruneConfig, QuantizeConfig, SelectConfig
from evergreen.config.data import PreprocessConfig, ValidateConfig
from evergreen.config.gan import GanConfig
from evergreen.config.ingest import IngestConfig
from evergreen.config.loading import (
    apply_overrides,
    default_params_yaml,
    load_config,
    params_hash,
    parse_config,
    read_yaml,
    yaml_problem,
)
from evergreen.config.promote import EvaluateConfig, PromoteConfig, RetrainConfig
from evergreen.config.root import SECTIONS, Config
from evergreen.config.runtime import ServeConfig, UiConfig, WatchConfig
from evergreen.config.section import Section
from evergreen.config.train import (
    AugmentConfig,
    BudgetConfig,
    CnnConfig,
    DistributedConfig,
    EarlyStoppingConfig,
    FeedConfig,
    ProgressiveConfig,
    TrainConfig,
    VitConfig,
)
from evergreen.config.tune import TuneConfig

__all__ = [
    "SECTIONS", "AugmentConfig", "BudgetConfig", "CnnConfig", "CompressConfig", "Config",
    "DistributedConfig", "EarlyStoppingConfig", "EvaluateConfig", "FeedConfig", "GanConfig", "IngestConfig",
    "PreprocessConfig", "ProgressiveConfig", "PromoteConfig", "PruneConfig", "QuantizeConfig",
    "RetrainConfig", "SelectConfig", "Section", "ServeConfig", "TrainConfig", "TuneConfig",
    "UiConfig", "ValidateConfig", "VitConfig", "WatchConfig", "apply_overrides",
    "default_params_yaml", "load_config", "params_hash", "parse_config", "read_yaml",
    "yaml_problem",
]
