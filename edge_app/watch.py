"""Classify images as they arrive in a folder (from the camera or a USB stick), each once.

Polling, not inotify: it works the same on SD cards, USB sticks (FAT) and
network mounts, and costs nothing measurable at a few-second interval. A
file is taken only once its size and modification time have stood still for
`settle` seconds, so a half-copied image is not classified as corrupt. The
results file is the only state: after a restart, everything already in it
is skipped, so each image appears once however often the service restarts.
The one exception: a file whose row was an error and that changes later (a
copy that stalled, then finished) is read again, a bounded number of times.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from edge_app.classify import Summary, classify_stream
from edge_app.model import ModelBundle
from edge_app.results import ResultWriter
from edge_app.sources import decode_stream, expand_paths


@dataclass
class SettleTracker:
    """Remembers each unseen file's (size, mtime) and when it last changed; a file is ready once unchanged for `settle` s."""

    settle: float
    _seen: dict[str, tuple[tuple[int, int], float]] = field(default_factory=dict)

    def ready(self, paths: list[str], now: float) -> list[str]:
        out = []
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:  # vanished, or a dangling link: nothing to take yet
                self._seen.pop(p, None)
                continue
            sig = (st.st_size, st.st_mtime_ns)
            prev = self._seen.get(p)
            if prev is None or prev[0] != sig:
                self._seen[p] = (sig, now)
            elif now - prev[1] >= self.settle:
                out.append(p)
        return out

    def forget(self, paths: list[str]) -> None:
        for p in paths:
            self._seen.pop(p, None)


#: How many times a file whose row was an error is read again after it changed (a copy that was still arriving).
MAX_RETRIES = 3


def _signature(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass
class FailedFiles:
    """Files whose row was an error, with their (size, mtime) then: one that changes since is worth another read.

    A file half-copied when first read (a slow USB stick, a copy that was
    paused) gets an error row; once it is complete it must not stay an
    error forever, nor be retried for ever if it is truly corrupt.
    """

    retries: int = MAX_RETRIES
    _failed: dict[str, tuple[tuple[int, int] | None, int]] = field(default_factory=dict)

    def failed(self, path: str) -> None:
        tries = self._failed.get(path, (None, -1))[1] + 1
        self._failed[path] = (_signature(path), tries)

    def forget(self, path: str) -> None:
        self._failed.pop(path, None)

    def changed(self) -> list[str]:
        """Failed files that have changed since and have retries left; they are forgotten until they fail again."""
        out = []
        for path, (sig, tries) in list(self._failed.items()):
            now = _signature(path)
            if now is not None and now != sig and tries < self.retries:
                out.append(path)
                self._failed[path] = (now, tries)
        return out


def watch(
    folder: str,
    model: ModelBundle,
    writer: ResultWriter,
    stop: threading.Event,
    interval: float = 2.0,
    settle: float = 1.0,
    batch_size: int = 32,
    threads: int = 2,
    recursive: bool = True,
    on_batch: Callable[[Summary], None] | None = None,
    on_skipped: Callable[[str, str], None] | None = None,
) -> Summary:
    """Poll `folder` until `stop` is set; returns the totals of this session, over the session's whole time.

    Each file gets one row, except a file whose row was an error and that
    has changed since (FailedFiles): it is read again, up to MAX_RETRIES
    times, and its new row follows the old one in the results file.
    """
    done = set(writer.done_paths)
    failed = FailedFiles()
    for row in writer.previous:
        if row.get("status") == "error":
            failed.failed(row["path"])
    tracker = SettleTracker(settle)
    total = Summary()
    started = time.monotonic()
    while not stop.is_set():
        done.difference_update(failed.changed())
        try:
            candidates = [p for p in expand_paths([folder], recursive, on_skipped) if p not in done]
        except FileNotFoundError:  # a USB stick unplugged: wait for it to come back
            candidates = []
        ready = tracker.ready(candidates, time.monotonic())
        if ready:
            summary = classify_stream(model, decode_stream(ready, model.input.size, model.fit, threads), writer, batch_size,
                                      on_row=lambda row: failed.failed(row.path) if row.status == "error" else failed.forget(row.path))
            done.update(ready)
            tracker.forget(ready)
            total.labels.update(summary.labels)
            total.errors += summary.errors
            if on_batch:
                on_batch(summary)
        stop.wait(interval)
    total.seconds = time.monotonic() - started
    return total
