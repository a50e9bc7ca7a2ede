"""Mark-1: a frozen video encoder and a frozen LLM joined by a small trained projector, over a feature cache.

The API loads on first use (`mark1.extract`, `mark1.Mark1`, ...), so `import mark1.errors` and `mark1 --help`
import no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_API = {
    "Config": "mark1.config",
    "load_config": "mark1.config",
    "Mark1Error": "mark1.errors",
    "FeatureCache": "mark1.cache",
    "Mark1": "mark1.model.mark1",
    "extract": "mark1.stages.extract",
    "train": "mark1.stages.train",
    "evaluate": "mark1.stages.evaluate",
    "predict": "mark1.stages.evaluate",
    "infer": "mark1.stages.infer",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'mark1' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
