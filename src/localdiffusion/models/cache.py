"""Keep loaded pipelines between generations, least recently used first, within a memory budget."""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from localdiffusion.models.loader import pipeline_bytes


class PipelineCache:
    """An LRU of loaded pipelines. The most recent one is always kept, even over budget, and so are pinned
    ones (a class's facilitator pins the models everyone uses, so they stay loaded once loaded)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._pinned: frozenset[Any] = frozenset()
        self.loads = 0

    def pin(self, keys: Any) -> None:
        """Keep these keys' pipelines whatever the budget (replaces the pins before); others may be evicted now."""
        with self._lock:
            self._pinned = frozenset(keys)
            self._evict()

    @property
    def pinned(self) -> frozenset[Any]:
        return self._pinned

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
            pipe = load()
            self.loads += 1
            self._items[key] = (pipe, pipeline_bytes(pipe))
            self._evict()
            return pipe

    def _evict(self) -> None:
        while sum(size for _, size in self._items.values()) > self.budget_bytes:
            newest = next(reversed(self._items), None)
            oldest = next((k for k in self._items if k != newest and k not in self._pinned), None)
            if oldest is None:  # only pinned ones and the newest are left
                break
            del self._items[oldest]
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def keys(self) -> list[Any]:
        return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            gc.collect()
