"""Live job events (queued, started, loading, step, done, failed, cancelled), from the worker thread to listeners.

"loading" comes while the models a job needs load (the first job of a model), before its first "step":
its data has `phase: "load"`, `loading` (what is loading now, "" once it has loaded), `loaded` and `parts`.

Listeners subscribe with a filter (an owner, a client) and a way to deliver: a plain thread-safe
queue, or an asyncio queue on an event loop (the server's WebSockets).

Class-wide events (`everyone=True`, such as "comic-changed" when a class comic changes) are not any one
owner's: they reach every listener that asked for them (`everyone=True` when subscribing), whatever its
filter, and no other listener.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EVENT_TYPES = ("queued", "started", "loading", "step", "done", "failed", "cancelled")


@dataclass
class Event:
    type: str
    job_id: int
    owner_id: int
    client: str
    data: dict[str, Any] = field(default_factory=dict)
    preview: Any = None  # PIL image of the step preview, for "step" events
    everyone: bool = False  # a class-wide event, for every listener that asked for those


@dataclass
class Subscription:
    deliver: Callable[[Event], None]
    owner_id: int | None = None
    client: str | None = None
    everyone: bool = False  # also the class-wide events

    def wants(self, event: Event) -> bool:
        if event.everyone:
            return self.everyone
        return (self.owner_id is None or event.owner_id == self.owner_id) and (self.client is None or event.client == self.client)


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._lock = threading.Lock()

    def publish(self, event: Event) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        for sub in subscriptions:
            if sub.wants(event):
                sub.deliver(event)

    def subscribe(self, deliver: Callable[[Event], None], owner_id: int | None = None, client: str | None = None,
                  everyone: bool = False) -> Subscription:
        sub = Subscription(deliver, owner_id, client, everyone)
        with self._lock:
            self._subscriptions.append(sub)
        return sub

    def subscribe_queue(self, owner_id: int | None = None, client: str | None = None) -> tuple[Subscription, "queue.Queue[Event]"]:
        q: queue.Queue[Event] = queue.Queue()
        return self.subscribe(q.put, owner_id, client), q

    def subscribe_async(self, loop: asyncio.AbstractEventLoop, owner_id: int | None = None,
                        client: str | None = None, everyone: bool = False) -> tuple[Subscription, "asyncio.Queue[Event]"]:
        q: asyncio.Queue[Event] = asyncio.Queue()
        return self.subscribe(lambda e: loop.call_soon_threadsafe(q.put_nowait, e), owner_id, client, everyone), q

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)
