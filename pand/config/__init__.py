"""Run configuration: structured schema + YAML group composition + dotted overrides."""
from pand.errors import ConfigError

from .loader import GROUPS, config_dir, list_group, load_config, save_config, to_yaml
from .schema import DATASETS, RECIPES, STAGES, RunCfg

__all__ = [
    "ConfigError", "DATASETS", "GROUPS", "RECIPES", "STAGES", "RunCfg", "config_dir", "list_group", "load_config",
    "save_config", "to_yaml",
]
