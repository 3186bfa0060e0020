"""The configuration: one YAML file, validated at the edge into frozen values."""

from daemon.config.load import load_config
from daemon.config.model import ApiConfig, Config, InboxConfig, RetryConfig

__all__ = ["ApiConfig", "Config", "InboxConfig", "RetryConfig", "load_config"]
