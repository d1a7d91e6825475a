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
    """An LRU of loaded pipelines. The most recent one is always kept, even over budget."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

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
        while len(self._items) > 1 and sum(size for _, size in self._items.values()) > self.budget_bytes:
            self._items.popitem(last=False)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def keys(self) -> list[Any]:
        return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            gc.collect()
