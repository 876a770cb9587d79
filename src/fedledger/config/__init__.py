"""Configuration, typed and range-checked once, when it is loaded.

* :mod:`fedledger.config.task`: a task's TOML file (:func:`load_config`, :class:`TaskConfig`);
* :mod:`fedledger.config.node`: one participant's node.toml (:func:`load_node_config`);
* :mod:`fedledger.config.overrides`: the command line's overrides and presets
  (:func:`~fedledger.config.overrides.with_overrides`,
  :func:`~fedledger.config.overrides.robust_rule`).

The aggregation rules' parameters are described once, next to the rules, in
:mod:`fedledger.aggregation.params`. Every bad value is a :class:`~fedledger.errors.ConfigError`
naming its key. This package re-exports :mod:`fedledger.config.task`, so
``from fedledger.config import TaskConfig, load_config`` works.
"""

from fedledger.config.task import (
    ACCESS_POLICIES,
    DATASETS,
    PARTITIONS,
    AggregationConfig,
    CompressionConfig,
    DataConfig,
    GovernanceConfig,
    IncentivesConfig,
    LedgerConfig,
    MixingConfig,
    PrivacyConfig,
    TaskConfig,
    load_config,
    parse_config,
    read_toml,
    toml_value,
)

__all__ = [
    "ACCESS_POLICIES",
    "DATASETS",
    "PARTITIONS",
    "AggregationConfig",
    "CompressionConfig",
    "DataConfig",
    "GovernanceConfig",
    "IncentivesConfig",
    "LedgerConfig",
    "MixingConfig",
    "PrivacyConfig",
    "TaskConfig",
    "load_config",
    "parse_config",
    "read_toml",
    "toml_value",
]
