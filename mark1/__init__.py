"""Mark-1: a frozen video encoder and a frozen LLM joined by a small trained projector, over a feature cache."""

from mark1.cache import FeatureCache
from mark1.config import Config, load_config
from mark1.errors import Mark1Error
from mark1.stages.extract import extract
from mark1.stages.infer import Mark1

__all__ = ["Config", "FeatureCache", "Mark1", "Mark1Error", "extract", "load_config"]
__version__ = "0.1.0"
