"""Model registry and shipped weights."""

from latentcodec.zoo.registry import REGISTRY, ModelEntry, get_entry, get_entry_by_id

__all__ = ["REGISTRY", "ModelEntry", "get_entry", "get_entry_by_id"]
