"""Classify a stream of decoded images in batches and hand rows to a writer in input order."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from edge_app.labels import LABELS
from edge_app.model import ModelBundle
from edge_app.results import ResultWriter, Row
from edge_app.sources import Decoded


@dataclass
class Summary:
    labels: Counter = field(default_factory=Counter)
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    fields: list[tuple[str, tuple[int, int]]] = field(default_factory=list)  # whole-field photographs among the inputs

    @property
    def processed(self) -> int:
        return sum(self.labels.values()) + self.errors

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        counts = ", ".join(f"{name}: {self.labels.get(name, 0)}" for name in reversed(LABELS))
        done = f"{self.processed:,} image{'' if self.processed == 1 else 's'} in {duration_text(self.seconds)}"
        if self.seconds >= 1:  # a rate over milliseconds is mostly start-up noise
            done += f" ({self.rate:,.0f} images/s)"
        parts = [done, counts, f"errors: {self.errors}"]
        if self.skipped:
            parts.append(f"already done (resumed): {self.skipped}")
        return "; ".join(parts)


def duration_text(seconds: float) -> str:
    """E.g. "45 ms", "3.2 s", "2 min 05 s": never "0.0 s" for work that took time."""
    if seconds < 1:
        return f"{1000 * seconds:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def label_for(probability: float, threshold: float) -> str:
    return LABELS[1] if probability >= threshold else LABELS[0]


def classify_stream(
    model: ModelBundle,
    images: Iterable[Decoded],
    writer: ResultWriter,
    batch_size: int = 32,
    threshold: float | None = None,
    on_row: Callable[[Row], None] | None = None,
) -> Summary:
    """Run the model over decoded images, writing every input's row (ok or error) batch by batch.

    Rows are written in input order; an error row waits for the batch it
    sits in, so the output order never depends on timing. The first batch
    holds one image, so the first result appears without waiting for a full
    batch to decode.
    """
    cut = model.threshold if threshold is None else threshold
    summary = Summary()
    start = time.perf_counter()
    pending: list[Decoded] = []

    def flush() -> None:
        good = [d for d in pending if d.pixels is not None]
        probs = iter(model.predict(np.stack([d.pixels for d in good])) if good else [])
        rows = []
        for d in pending:
            if d.pixels is None:
                row = Row(d.path, None, None, "error", d.error or "unknown error")
                summary.errors += 1
            else:
                p = float(next(probs))
                row = Row(d.path, label_for(p, cut), p, "ok")
                summary.labels[row.label] += 1
                if d.field:
                    summary.fields.append((d.path, d.field))
            rows.append(row)
        writer.write(rows)
        if on_row:
            for row in rows:
                on_row(row)
        pending.clear()

    target = 1  # the first row goes out after one image: the user sees a result at once, then full batches
    ready = 0
    for item in images:
        pending.append(item)
        ready += item.pixels is not None
        if ready >= target or len(pending) >= 4 * batch_size:
            flush()
            target, ready = batch_size, 0
    if pending:
        flush()
    summary.seconds = time.perf_counter() - start
    return summary
