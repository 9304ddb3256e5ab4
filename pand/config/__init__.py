"""Run configuration: structured schema + YAML group composition + dotted overrides."""
from .loader import GROUPS, ConfigError, config_dir, list_group, load_config, save_config, to_yaml
from .schema import DATASETS, RECIPES, RunCfg

__all__ = [
    "ConfigError", "DATASETS", "GROUPS", "RECIPES", "RunCfg", "config_dir", "list_group", "load_config",
    "save_config", "to_yaml",
]
