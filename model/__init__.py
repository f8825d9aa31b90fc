"""msGFM on GeoPile-2: datasets, the network, pretraining and the downstream benchmarks.

``from model import load_pretrained`` rebuilds an exported encoder (:mod:`model.export`); it is
imported on first use, so importing ``model`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.export import load_pretrained

__all__ = ["load_pretrained"]


def __getattr__(name: str) -> Any:
    """``load_pretrained``, imported lazily."""
    if name == "load_pretrained":
        from model.export import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'model' has no attribute {name!r}")
