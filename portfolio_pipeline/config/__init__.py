"""Strict YAML configuration: every file validated by one pydantic model."""

from portfolio_pipeline.config.loader import (
    CONFIG_FILES,
    ConfigError,
    ConfigProblem,
    PlatformConfig,
    check_config_dir,
    load_config_file,
    load_platform_config,
)

__all__ = [
    "CONFIG_FILES",
    "ConfigError",
    "ConfigProblem",
    "PlatformConfig",
    "check_config_dir",
    "load_config_file",
    "load_platform_config",
]
