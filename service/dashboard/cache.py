"""Serialised chart answers, cached per (study, chart) under the study's version.

A chart request at an unchanged version costs one small version query and a
dictionary lookup, whatever the size of the study. When the version changed:

- small studies rebuild at once (tens of milliseconds);
- big studies (``stale_ok``) get the previous answer immediately while one
  background thread rebuilds it (stale-while-revalidate). The stale answer
  carries its own, older version, so the page asks again on its next poll and
  gets the new figure as soon as it is ready. A live 10,000-trial study, where
  trials finish every second, never makes a request wait for a rebuild.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("hpo.dashboard")

Key = tuple[Any, ...]
#: build() -> (version it was built at, JSON body)
Build = Callable[[], tuple[str, str]]


class FigureCache:
    """Chart answers by key, each labelled with the version it was built at (LRU)."""

    def __init__(self, max_entries: int = 512) -> None:
        self._items: OrderedDict[Key, tuple[str, str]] = OrderedDict()
        self._key_locks: dict[Key, threading.Lock] = {}
        self._rebuilding: set[Key] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-rebuild")
        self.max_entries = max_entries
        self.hits = self.misses = self.stale = 0

    def get(self, key: Key, version: str, build: Build, *, stale_ok: bool = False) -> str:
        """The answer at ``version``: cached, stale while rebuilding, or built now."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and (hit[0] == version or stale_ok):
                self._items.move_to_end(key)
                if hit[0] == version:
                    self.hits += 1
                else:
                    self.stale += 1
                    self._rebuild_later(key, build)
                return hit[1]
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:  # one build per key at a time; the others wait and reuse it
            with self._lock:
                hit = self._items.get(key)
                if hit is not None and hit[0] == version:
                    self.hits += 1
                    return hit[1]
            built_version, body = build()
            self._store(key, built_version, body)
            return body

    def _store(self, key: Key, version: str, body: str) -> None:
        with self._lock:
            self.misses += 1
            self._items[key] = (version, body)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                old, _ = self._items.popitem(last=False)
                self._key_locks.pop(old, None)

    def _rebuild_later(self, key: Key, build: Build) -> None:
        """(Called with the lock held.) Queue one background rebuild per key."""
        if key in self._rebuilding:
            return
        self._rebuilding.add(key)

        def run() -> None:
            try:
                self._store(key, *build())
            except Exception:  # noqa: BLE001 - the stale answer stays; the next request retries
                log.exception("dashboard: rebuilding %s failed", key)
            finally:
                with self._lock:
                    self._rebuilding.discard(key)

        self._pool.submit(run)

    def idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until no rebuild is queued or running (tests, benchmarks)."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._rebuilding:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
