"""Typed run configuration: one JSON file -> nested dataclasses.

Defaults live in :mod:`.sections` (one dataclass per section); a JSON file and dotted
``--set section.key=value`` overrides replace them (:mod:`.loading`). Unknown keys, wrong
types and values outside a field's rule (declared with the field: ``option(default, rule,
help=...)``, :mod:`.rules`) fail with the dotted path in a one-line :class:`ConfigError`,
before any process group starts (:mod:`.validation`). docs/CONFIG.md is generated from these
declarations (``python -m unimodal_free.config_reference``).

This package imports nothing of the package but the modality table (``modalities.py``),
so every other part may import it.
"""

from unimodal_free.config.loading import (
    CONFIG_DIR,
    config_from_dict,
    config_json,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)
from unimodal_free.config.rules import ConfigError, option
from unimodal_free.config.sections import (
    Config,
    DataConfig,
    DeepSpeedConfig,
    EvalConfig,
    ImageAugmentConfig,
    LogConfig,
    MaskingConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    Source,
    TrainConfig,
    alignment_on,
)
from unimodal_free.config.validation import as_data, check_budget, fixed_on_resume, validate

__all__ = [
    "CONFIG_DIR", "alignment_on", "as_data", "check_budget", "Config", "ConfigError", "DataConfig", "DeepSpeedConfig", "EvalConfig", "ImageAugmentConfig",
    "LogConfig",
    "MaskingConfig", "ModelConfig", "ObjectiveConfig", "OptimConfig", "Source", "TrainConfig", "config_from_dict",
    "config_json", "config_to_dict", "fixed_on_resume", "load_config", "option", "parse_override", "save_config", "validate",
]
