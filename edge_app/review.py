"""A microscopist's review of a counted slide: which cells to show, the decisions, and the reviewed parasitemia.

The app's count is a screening aid; it becomes a result once a person has
looked at the cells it called Parasitized. Every such cell is shown; so is
every cell called Uninfected at or above the model's review threshold (the
sidecar's "review" block: near the counting threshold, where the calls
differ most from stain to stain); and a seeded random sample of the other
Uninfected cells nearest the threshold (a spot check for missed
parasites); and, when the review block the slide was counted with was
measured showing them, every enlarged cell (`ENLARGED_AREA`) whatever its
score and every box set apart as a white cell (edge_app.white_cells),
since a mature schizont's merozoites can stain like a nucleus and the rule
cannot tell. Each gets Confirm (the app's call is right) or Reject (it is
wrong: for a white cell, it is a parasitised red cell). When every shown
cell is decided the slide is *reviewed*, and its reviewed parasitemia is
the cells a person confirmed as parasitised (Parasitized calls confirmed,
the other cells shown rejected) over all counted cells, the
rejected white cells added: no false positive is left, so it is corrected
only for the cells the pipeline misses at the lowest threshold shown
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
from typing import Iterator

import numpy as np

from edge_app.labels import LABELS
from edge_app.parasitemia import CountingErrors, Parasitemia
from edge_app.results import folder_lock, open_in, read_in

REVIEW_FILE = "review.jsonl"
DECISIONS = ("confirm", "reject")
#: What a white cell set apart was called, as the review shows it.
WHITE_CALL = "white cell"
#: P. vivax (and P. ovale) enlarge the red cells they infect, and on a stain unlike the training slides the classifier
#: scores such cells low (models/DETAILS.md, "The review threshold"): a counted cell whose box is at least this many
#: times its field's median box is shown for review whatever its score.
ENLARGED_AREA = 1.5
#: What a review block measured now is measured showing besides the cells at its threshold, whatever their score:
#: training.fields.review_scores scores these cells as shown, the block records it (edge_app.model.Counting), and
#: serve shows them.
REVIEW_SHOWS = {"enlarged_area": ENLARGED_AREA, "white_cells": True}
#: Uninfected cells shown per slide, drawn from the SPOT_POOL * SPOT_CHECKS nearest the threshold.
SPOT_CHECKS = 12
SPOT_POOL = 3


def cell_key(field_no: int, cell: int, white: bool = False) -> str:
    """A cell's name within its slide: the field's position in the slide, then the cell's number in the field (for a
    white cell, which has none, "w" and its place among the field's white cells)."""
    return f"{field_no}:w{cell}" if white else f"{field_no}:{cell}"


@dataclass(frozen=True)
class ReviewCell:
    """A cell to show the reviewer: where it is (field position in the slide, cell number) and what the app called it.

    A white cell set apart is shown as a spot check is, called not a
    parasite: Reject means a parasitised red cell, which then joins the count.
    """

    field_no: int
    field: str
    cell: int
    box: tuple[int, int, int, int]
    call: str
    probability: float
    spot_check: bool  # called Uninfected: shown to find a missed parasite (Reject means parasitised)
    near: bool = False  # called Uninfected but at or above the review threshold: shown every time, not sampled
    white: bool = False  # set apart as a white cell, not counted; `cell` is its place among the field's white cells
    enlarged: bool = False  # called Uninfected below the review threshold, but enlarged (ENLARGED_AREA): shown every time

    @property
    def key(self) -> str:
        return cell_key(self.field_no, self.cell, self.white)

    @property
    def kind(self) -> str:
        """Why it is shown: "flagged" (called Parasitized), "near" (the threshold), "white", "enlarged" or "spot" (check)."""
        if not self.spot_check:
            return "flagged"
        return "white" if self.white else "near" if self.near else "enlarged" if self.enlarged else "spot"


@dataclass(frozen=True)
class Decision:
    key: str
    decision: str
    reviewer: str
    at: str


def numbered_cells(rows: list[dict], status: str = "ok") -> Iterator[tuple[int, dict]]:
    """A slide's rows of one status (counted red cells, or "white_cell") with their field's position in the slide
    (the order fields were counted in)."""
    field_no: dict[str, int] = {}
    for r in rows:
        no = field_no.setdefault(r["field"], len(field_no))
        if r["status"] == status:
            yield no, r


def white_cell_rows(rows: list[dict]) -> Iterator[tuple[int, int, dict]]:
    """A slide's white-cell rows with their field's position and their place among that field's white cells."""
    seen: dict[int, int] = {}
    for no, r in numbered_cells(rows, "white_cell"):
        seen[no] = seen.get(no, -1) + 1
        yield no, seen[no], r


def enlarged(areas: np.ndarray, limit: float = ENLARGED_AREA) -> np.ndarray:
    """Which of one field's counted cells, given their box areas, are enlarged: at least `limit` times the median."""
    areas = np.asarray(areas, np.float64).reshape(-1)
    return areas >= limit * np.median(areas) if len(areas) else np.zeros(0, bool)


def row_box(r: dict) -> tuple[int, int, int, int]:
    """A result row's box (x, y, width, height) in its field: the rows are read back as text."""
    return tuple(int(r[k]) for k in ("x", "y", "width", "height"))


def review_cells(rows: list[dict], seed: str, threshold: float | None = None, spot_checks: int = SPOT_CHECKS,
                 enlarged_area: float | None = None, white_cells: bool = False) -> list[ReviewCell]:
    """The cells to review, from a slide's result rows: every cell called Parasitized, at or above `threshold` (the
    review threshold) or enlarged (with `enlarged_area`), in field order, then (with `white_cells`) every white cell
    set apart, then the spot checks.

    Seeded by the slide's id, so the same cells come back after a restart
    and on every device that opens the slide. What is shown whatever its
    score comes from the review block the slide was counted with
    (edge_app.model.Counting), since its sensitivity was measured so: a
    slide counted before those cells were shown keeps its review.
    """
    counted = list(numbered_cells(rows))
    areas: dict[int, list[int]] = {}
    for no, r in counted:
        areas.setdefault(no, []).append(int(r["width"]) * int(r["height"]))
    large = {no: iter(enlarged(a, enlarged_area) if enlarged_area else np.zeros(len(a), bool)) for no, a in areas.items()}
    cells = []
    for no, r in counted:
        p, uninfected = float(r["probability"]), r["label"] != LABELS[1]
        near = uninfected and threshold is not None and p >= threshold
        cells.append(ReviewCell(no, r["field"], int(r["cell"]), row_box(r), r["label"], p, uninfected, near,
                                enlarged=bool(next(large[no])) and uninfected and not near))
    shown = [c for c in cells if c.kind != "spot"]
    white = [ReviewCell(no, r["field"], i, row_box(r), WHITE_CALL, 0.0, True, white=True)
             for no, i, r in (white_cell_rows(rows) if white_cells else ())]
    nearest = sorted((c for c in cells if c.kind == "spot"), key=lambda c: -c.probability)[:SPOT_POOL * spot_checks]
    spot = random.Random(seed).sample(nearest, min(spot_checks, len(nearest)))
    return shown + white + sorted(spot, key=lambda c: (c.field_no, c.cell))


def read_decisions(folder: str | os.PathLike) -> dict[str, Decision]:
    """The latest decision for each cell; a line torn by a power cut is ignored."""
    decisions: dict[str, Decision] = {}
    try:
        text = read_in(folder, REVIEW_FILE).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return decisions
    for line in text.splitlines():
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
        fd = open_in(folder, REVIEW_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
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

    def _decided(self, decision: str, *kinds: str) -> int:
        """Cells of these kinds (ReviewCell.kind) given `decision`."""
        return sum(1 for c in self.cells if c.kind in kinds
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
        """Cells a person says are parasitised: Parasitized calls confirmed; the other cells shown (called Uninfected, or
        set apart as white cells) rejected."""
        return self._decided("confirm", "flagged") + self._decided("reject", "near", "white", "enlarged", "spot")

    @property
    def cells_counted(self) -> int:
        """The red cells of the reviewed count: the app's, and the white cells a person says are parasitised red cells."""
        return self.counted_cells + self._decided("reject", "white")

    @property
    def result(self) -> Parasitemia | None:
        if self.status != "reviewed" or not self.counted_cells:
            return None
        return Parasitemia(self.cells_counted, self.parasites, self.min_cells,
                           self.errors.after_review() if self.errors else None)

    def as_dict(self) -> dict:
        result = self.result
        shown = {kind: sum(1 for c in self.cells if c.kind == kind) for kind in ("flagged", "near", "white", "enlarged", "spot")}
        reviewers = sorted({d.reviewer for d in self.decisions.values()})
        lo, hi = result.interval if result else (None, None)
        return {
            "status": self.status, "cells_to_review": len(self.cells), "decided": self.decided,
            "flagged": shown["flagged"], "flagged_confirmed": self._decided("confirm", "flagged"),
            "flagged_rejected": self._decided("reject", "flagged"), "near_threshold": shown["near"],
            "near_threshold_parasitised": self._decided("reject", "near"),
            "enlarged": shown["enlarged"], "enlarged_parasitised": self._decided("reject", "enlarged"),
            "white_cells": shown["white"], "white_cells_parasitised": self._decided("reject", "white"),
            "spot_checks": shown["spot"], "spot_checks_parasitised": self._decided("reject", "spot"),
            "reviewers": reviewers, "last_decision": max((d.at for d in self.decisions.values()), default=None),
            "parasitemia": result.fraction if result else None, "ci95": [lo, hi] if result else None,
            "confirmed_parasitised": self.parasites if result else None, "cells_counted": self.cells_counted if result else None,
            "corrected_for_missed": None if not (result and self.errors) else {
                "sensitivity": self.errors.sensitivity, "sensitivity_sd": self.errors.sensitivity_sd,
                "infected_cells": self.errors.infected_cells},
        }
