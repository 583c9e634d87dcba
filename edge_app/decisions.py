"""The one way a review decision is made: the slide's `review.jsonl`, its summary and report, and the register, in that
order, all while the slide's folder is locked, so they cannot be left disagreeing by anything but a crash, which
`edge_app.register.reconcile` (run as `serve` starts) and `slides rebuild` put right from `review.jsonl`.

A decision names the state of the cell the reviewer saw (`seen`): if another
reviewer decided the cell since, the decision is refused as a conflict
instead of silently replacing theirs.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from edge_app.register import get_slide, index_slide
from edge_app.results import folder_lock
from edge_app.review import DECISIONS, Decision, record_decision
from edge_app.slide import publish, read_identity, read_summary, slide_review


class DecisionRefused(ValueError):
    """A decision that cannot be recorded; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Made:
    """A recorded decision, and what the reviewer's page must send as `seen` for that cell next time."""

    decision: Decision

    @property
    def seen(self) -> str:
        return seen_token(self.decision)


def seen_token(decision: Decision | None) -> str:
    """How a page names the decision it showed for a cell ("" for none): who decided what, when."""
    return "" if decision is None else f"{decision.decision}|{decision.reviewer}|{decision.at}"


def decide(conn: sqlite3.Connection, slide_id: str, key: str, decision: str, reviewer: str,
           seen: str | None = None) -> tuple[Made, dict]:
    """Record `reviewer`'s decision on cell `key` of a registered slide; returns it and the slide's new summary.

    Refused (DecisionRefused) when the slide is not registered, its folder
    no longer holds it, the cell is not in its review, or `seen` (the
    page's `seen_token` for the cell; None skips the check) no longer
    matches the cell's latest decision because another reviewer made it.
    """
    if decision not in DECISIONS:
        raise DecisionRefused(f"decision must be one of {', '.join(DECISIONS)}")
    row = get_slide(conn, slide_id)
    if row is None:
        raise DecisionRefused(f"no slide {slide_id} in the register", 404)
    folder = Path(row["folder"])
    try:
        with folder_lock(folder):
            if read_identity(folder)["id"] != slide_id:
                raise DecisionRefused(f"the folder registered for slide {slide_id} now holds another slide: run "
                                      "`malaria-edge slides rebuild`", 409)
            summary = read_summary(folder)
            review = slide_review(folder, summary)
            cell = next((c for c in review.cells if c.key == key), None)
            if cell is None:
                raise DecisionRefused("not a cell of this slide's review")
            current = review.decisions.get(key)
            if seen is not None and seen != seen_token(current) and current is not None and current.reviewer != reviewer:
                raise DecisionRefused(f"{current.reviewer} {'confirmed' if current.decision == 'confirm' else 'rejected'} "
                                      f"this cell at {current.at[:16].replace('T', ' ')} after this page was loaded: "
                                      "reload the page to see it, then decide again if you disagree", 409)
            made = record_decision(folder, cell, decision, reviewer)
            summary = publish(folder)
            index_slide(conn, folder)
    except OSError as exc:
        raise DecisionRefused(f"slide {slide_id}'s folder cannot be written ({exc.strerror or exc})", 410) from None
    return Made(made), summary
