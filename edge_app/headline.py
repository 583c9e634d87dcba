"""The one figure a slide reports, in words a person can act on: the same line in `smear`/`capture`, the report, `serve`
and the register's list.

A field worker reads the first figure and nothing else. On a stain the
models never saw, the automatic estimate (corrected for error rates
measured on other stains) can read 0.00 % on an infected slide while cells
are flagged, with an interval too wide to act on (models/README.md). So
the headline is, in this order:

1. the reviewed parasitemia, once a microscopist has decided every cell
   shown; a reviewed slide with no parasite confirmed reads "negative",
   with its upper bound;
2. before that, when cells are flagged: how many, of how many counted,
   and that the figure awaits review; the automatic estimate is given
   beside it only as its interval, never as a bare 0.00 %;
3. when no cell is flagged: none flagged, with the automatic upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_app.parasitemia import Parasitemia


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _ci(lo: float, hi: float) -> str:
    return f"95 % CI {100 * lo:.2f}-{100 * hi:.2f} %"


@dataclass(frozen=True)
class Headline:
    """A slide's headline: `figure` is what a list or a big box shows, `text` the one line that says what it means."""

    kind: str  # "reviewed", "negative", "flagged", "none flagged", "no cells"
    figure: str
    text: str


def headline(total: Parasitemia, review: dict | None = None) -> Headline:
    """The slide's headline from its automatic count (`total`) and its review so far (a summary's "review")."""
    review = review or {}
    if review.get("status") == "reviewed" and review.get("parasitemia") is not None:
        lo, hi = review["ci95"]
        cells, confirmed = review["cells_counted"], review["confirmed_parasitised"]
        who = ", ".join(review.get("reviewers") or ()) or "a microscopist"
        if not confirmed:
            return Headline("negative", "negative",
                            f"negative: no parasite seen in {cells:,} cells reviewed by {who}; at most {_pct(hi)} "
                            "(95 % upper bound)")
        return Headline("reviewed", _pct(review["parasitemia"]),
                        f"parasitemia {_pct(review['parasitemia'])} ({_ci(lo, hi)}), reviewed by {who}: "
                        f"{confirmed:,} infected cells confirmed in {cells:,}")
    if not total.cells:
        return Headline("no cells", "no cells", "no red cells counted: nothing to report")
    lo, hi = total.interval
    progress = (f" (review: {review['decided']} of {review['cells_to_review']} cells decided)"
                if review.get("status") == "in review" else "")
    if total.parasitized:
        estimate = (f"automatic estimate {_pct(total.fraction)} ({_ci(lo, hi)})" if total.fraction > 0
                    else f"the automatic estimate cannot yet tell them from false positives ({_ci(lo, hi)})")
        return Headline("flagged", f"{total.parasitized:,} flagged",
                        f"{total.parasitized:,} of {total.cells:,} cells flagged as possibly infected "
                        f"({_pct(total.raw_fraction)}): the figure awaits a microscopist's review{progress}; {estimate}")
    return Headline("none flagged", "none flagged",
                    f"no cell flagged in {total.cells:,} cells: likely negative, at most {_pct(hi)} (automatic 95 % "
                    f"upper bound; a microscopist's review confirms it){progress}")


def running_text(total: Parasitemia) -> str:
    """The slide so far, as a field worker's terminal shows it after each field: the raw count, never a corrected
    figure that a few fields cannot support."""
    if not total.cells:
        return "no cells counted yet"
    return f"{total.parasitized:,} of {total.cells:,} cells flagged ({_pct(total.raw_fraction)})"


def list_figure(row: dict) -> str:
    """A register row's headline figure, for lists of slides (`headline`'s figure, from what the register keeps)."""
    if row.get("status") == "reviewed" and row.get("reviewed_parasitemia") is not None:
        return _pct(row["reviewed_parasitemia"]) if row["reviewed_parasitemia"] > 0 else "negative"
    if not row.get("cells"):
        return "no cells"
    return f"{row['parasitized']:,} flagged" if row.get("parasitized") else "none flagged"
