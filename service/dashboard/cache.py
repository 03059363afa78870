"""The dashboard's one cache: values by key, each labelled with the version it was built at.

Keys start with the study id (``(study_id, "frame")``, ``(study_id, "chart",
name)``...); the version is a cheap fingerprint of what the value was built
from (the study's trials, its metric cursor...). The cache is bounded (least
recently used entries go first) and thread-safe, and builds each key at most
once at a time: concurrent requests for the same missing value wait for the
one build and reuse it.

``build(previous)`` receives the previous value of the key, whatever its
version, so that a value can be refreshed incrementally (a study's trial
table re-reads only new and unfinished trials).

A request at an unchanged version costs a dictionary lookup. When the version
changed, values asked for with ``stale_ok`` (charts of big studies) are
answered at once with the previous value while one background thread rebuilds
it (stale-while-revalidate). The stale answer carries its own, older version,
so the page asks again on its next poll and gets the new value as soon as it
is ready: a live 10,000-trial study, where trials finish every second, never
makes a request wait for a rebuild.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger("hpo.dashboard")

V = TypeVar("V")
Key = tuple[Any, ...]
#: build(previous value or None) -> (the version it was built at, the value)
Build = Callable[[V | None], tuple[Hashable, V]]


@dataclass
class _Entry(Generic[V]):
    version: Hashable
    value: V


class VersionedCache(Generic[V]):
    """Values by key, each with the version it was built at (LRU, thread-safe)."""

    def __init__(self, max_entries: int, name: str = "cache") -> None:
        self.max_entries = max_entries
        self.name = name
        self._items: OrderedDict[Key, _Entry[V]] = OrderedDict()
        self._key_locks: dict[Key, threading.Lock] = {}
        self._rebuilding: set[Key] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dashboard-{name}")
        self.hits = self.misses = self.stale = 0

    def get(self, key: Key, version: Hashable, build: Build[V], *, stale_ok: bool = False) -> V:
        """The value at ``version``: cached, stale while rebuilding (``stale_ok``), or built now.

        With ``stale_ok`` the build may run on a background thread: it must not
        use the caller's database session.
        """
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and (hit.version == version or stale_ok):
                self._items.move_to_end(key)
                if hit.version == version:
                    self.hits += 1
                else:
                    self.stale += 1
                    self._rebuild_later(key, build)
                return hit.value
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:  # one build per key at a time; the others wait and reuse it
            with self._lock:
                hit = self._items.get(key)
            if hit is not None and hit.version == version:
                with self._lock:
                    self.hits += 1
                return hit.value
            built, value = build(None if hit is None else hit.value)
            self._store(key, built, value)
            return value

    def peek(self, key: Key) -> V | None:
        """The cached value, whatever its version (None when there is none)."""
        with self._lock:
            hit = self._items.get(key)
            return None if hit is None else hit.value

    def forget(self, study_id: int) -> None:
        """Drop every value of a study (keys that start with its id)."""
        with self._lock:
            for key in [k for k in self._items if k[0] == study_id]:
                del self._items[key]
                self._key_locks.pop(key, None)

    def _store(self, key: Key, version: Hashable, value: V) -> None:
        with self._lock:
            self.misses += 1
            self._items[key] = _Entry(version, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                old, _ = self._items.popitem(last=False)
                self._key_locks.pop(old, None)

    def _rebuild_later(self, key: Key, build: Build[V]) -> None:
        """(Called with the lock held.) Queue one background rebuild per key."""
        if key in self._rebuilding:
            return
        self._rebuilding.add(key)

        def run() -> None:
            try:
                previous = self.peek(key)
                self._store(key, *build(previous))
            except Exception:  # the stale value stays; the next request retries
                log.exception("dashboard: rebuilding %s %s failed", self.name, key)
            finally:
                with self._lock:
                    self._rebuilding.discard(key)

        self._pool.submit(run)

    def idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until no rebuild is queued or running (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._rebuilding:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        """Stop the background rebuilds (queued ones are dropped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
