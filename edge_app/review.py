"""A microscopist's review of a counted slide: which cells to show, the decisions, and the reviewed parasitemia.

The app's count is a screening aid; it becomes a result once a person has
looked at the cells it called Parasitized. Every such cell is shown; so is
every cell called Uninfected at or above the model's review threshold (the
sidecar's "review" block: near the counting threshold, where the calls
differ most from stain to stain); and a seeded random sample of the other
Uninfected cells nearest the threshold (a spot check for missed
parasites). Each gets Confirm (the app's call is right) or Reject (it is
wrong). When every shown cell is decided the slide is *reviewed*, and its
reviewed parasitemia is the cells a person confirmed as parasitised
(Parasitized calls confirmed, Uninfected ones rejected) over all counted
cells: no false positive is left, so it is corrected only for the cells
the pipeline misses at the lowest threshold shown
(`CountingErrors.after_review`). On real fields of a stain the models never
saw, that sensitivity carries over where the automatic count's rates do not
(models/DETAILS.md, "The review threshold").

Decisions are appended to the slide's own folder (`review.jsonl`, one line
each, synced; the last line for a cell wins), so the folder stays the whole
record of a slide and the register can always be rebuilt from it.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from edge_app.labels import LABELS
from edge_app.parasitemia import CountingErrors, Parasitemia
from edge_app.results import folder_lock

REVIEW_FILE = "review.jsonl"
DECISIONS = ("confirm", "reject")
#: Uninfected cells shown per slide, drawn from the SPOT_POOL * SPOT_CHECKS nearest the threshold.
SPOT_CHECKS = 12
SPOT_POOL = 3


def cell_key(field_no: int, cell: int) -> str:
    """A cell's name within its slide: the field's position in the slide, then the cell's number in the field."""
    return f"{field_no}:{cell}"


@dataclass(frozen=True)
class ReviewCell:
    """A cell to show the reviewer: where it is (field position in the slide, cell number) and what the app called it."""

    field_no: int
    field: str
    cell: int
    box: tuple[int, int, int, int]
    call: str
    probability: float
    spot_check: bool  # called Uninfected: shown to find a missed parasite (Reject means parasitised)
    near: bool = False  # called Uninfected but at or above the review threshold: shown every time, not sampled

    @property
    def key(self) -> str:
        return cell_key(self.field_no, self.cell)


@dataclass(frozen=True)
class Decision:
    key: str
    decision: str
    reviewer: str
    at: str


def numbered_cells(rows: list[dict]) -> Iterator[tuple[int, dict]]:
    """A slide's cell rows with their field's position in the slide (the order fields were counted in)."""
    field_no: dict[str, int] = {}
    for r in rows:
        no = field_no.setdefault(r["field"], len(field_no))
        if r["status"] == "ok":
            yield no, r


def review_cells(rows: list[dict], seed: str, threshold: float | None = None, spot_checks: int = SPOT_CHECKS) -> list[ReviewCell]:
    """The cells to review, from a slide's result rows: every cell called Parasitized or at or above `threshold` (the
    review threshold), in field order, then the spot checks.

    Seeded by the slide's id, so the same cells come back after a restart
    and on every device that opens the slide.
    """
    cells = []
    for no, r in numbered_cells(rows):
        box = tuple(int(r[k]) for k in ("x", "y", "width", "height"))
        p, uninfected = float(r["probability"]), r["label"] != LABELS[1]
        cells.append(ReviewCell(no, r["field"], int(r["cell"]), box, r["label"], p, uninfected,
                                uninfected and threshold is not None and p >= threshold))
    shown = [c for c in cells if not c.spot_check or c.near]
    nearest = sorted((c for c in cells if c.spot_check and not c.near), key=lambda c: -c.probability)[:SPOT_POOL * spot_checks]
    spot = random.Random(seed).sample(nearest, min(spot_checks, len(nearest)))
    return shown + sorted(spot, key=lambda c: (c.field_no, c.cell))


def read_decisions(folder: str | os.PathLike) -> dict[str, Decision]:
    """The latest decision for each cell; a line torn by a power cut is ignored."""
    path = Path(folder) / REVIEW_FILE
    decisions: dict[str, Decision] = {}
    if not path.exists():
        return decisions
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
            decision = Decision(str(d["key"]), d["decision"], str(d["reviewer"]), str(d["at"]))
        except (ValueError, KeyError, TypeError):
            continue
        if decision.decision in DECISIONS:
            decisions[decision.key] = decision
    return decisions


def record_decision(folder: str | os.PathLike, cell: ReviewCell, decision: str, reviewer: str) -> Decision:
    """Append one decision to the slide's folder, durably, before anything else hears of it."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
    if not reviewer.strip():
        raise ValueError("a decision needs the reviewer's name")
    made = Decision(cell.key, decision, reviewer.strip(), datetime.now(timezone.utc).isoformat(timespec="seconds"))
    line = json.dumps({"key": made.key, "field": cell.field, "cell": cell.cell, "call": cell.call,
                       "decision": made.decision, "reviewer": made.reviewer, "at": made.at}) + "\n"
    with folder_lock(folder):
        fd = os.open(Path(folder) / REVIEW_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    return made


@dataclass(frozen=True)
class Review:
    """Where a slide's review stands, and its reviewed parasitemia once every shown cell is decided."""

    cells: list[ReviewCell]
    decisions: dict[str, Decision]
    counted_cells: int
    errors: CountingErrors | None = None
    min_cells: int = 1

    def _decided(self, decision: str, spot_check: bool, near: bool | None = None) -> int:
        """Cells given `decision` among the Parasitized calls (`spot_check` False) or the Uninfected ones (True), the
        latter narrowed to those near the threshold or not when `near` is given."""
        return sum(1 for c in self.cells if c.spot_check == spot_check and (near is None or c.near == near)
                   and (d := self.decisions.get(c.key)) is not None and d.decision == decision)

    @property
    def decided(self) -> int:
        return sum(1 for c in self.cells if c.key in self.decisions)

    @property
    def status(self) -> str:
        decided = self.decided
        return "counted" if not decided else "reviewed" if decided == len(self.cells) else "in review"

    @property
    def parasites(self) -> int:
        """Cells a person says are parasitised: Parasitized calls confirmed, Uninfected ones (near the threshold or spot checks) rejected."""
        return self._decided("confirm", False) + self._decided("reject", True)

    @property
    def result(self) -> Parasitemia | None:
        if self.status != "reviewed" or not self.counted_cells:
            return None
        return Parasitemia(self.counted_cells, self.parasites, self.min_cells,
                           self.errors.after_review() if self.errors else None)

    def as_dict(self) -> dict:
        result = self.result
        flagged = sum(1 for c in self.cells if not c.spot_check)
        near = sum(1 for c in self.cells if c.near)
        reviewers = sorted({d.reviewer for d in self.decisions.values()})
        lo, hi = result.interval if result else (None, None)
        return {
            "status": self.status, "cells_to_review": len(self.cells), "decided": self.decided,
            "flagged": flagged, "flagged_confirmed": self._decided("confirm", False),
            "flagged_rejected": self._decided("reject", False), "near_threshold": near,
            "near_threshold_parasitised": self._decided("reject", True, near=True), "spot_checks": len(self.cells) - flagged - near,
            "spot_checks_parasitised": self._decided("reject", True, near=False),
            "reviewers": reviewers, "last_decision": max((d.at for d in self.decisions.values()), default=None),
            "parasitemia": result.fraction if result else None, "ci95": [lo, hi] if result else None,
            "confirmed_parasitised": self.parasites if result else None,
            "corrected_for_missed": None if not (result and self.errors) else {
                "sensitivity": self.errors.sensitivity, "sensitivity_sd": self.errors.sensitivity_sd,
                "infected_cells": self.errors.infected_cells},
        }
