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
2. where the laboratory is calibrated (edge_app.calibration) and the
   slide's stain matches, the estimate corrected with its own rates;
3. otherwise, when cells are flagged beyond what false positives alone
   give: how many, of how many counted, and that the figure awaits
   review, the automatic estimate beside it; never a bare 0.00 %;
4. when no more cells are flagged than false positives alone give, or
   none, and the automatic upper bound is at most LIKELY_NEGATIVE_BOUND:
   "likely negative", with that bound. Above it, the slide is not called
   negative: a slide of 30 fields of a stain the counting rates were not
   measured on, about 1 % infected, flagged fewer cells than the shipped
   false-positive rate gives and read "likely negative, at most 2.04 %";
   it now reads as its flagged cells, awaiting review, with the
   parasitemia the count cannot rule out.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_app.parasitemia import Parasitemia

#: A slide is called likely negative only when the automatic count rules out more than this parasitemia (95 % upper
#: bound): #33's bar for a slide of no malaria, which the other laboratory's 120 fields meet (at most 0.36 %), where
#: a slide of 1 % parasitemia, the annotated fields' level, would otherwise pass for negative.
LIKELY_NEGATIVE_BOUND = 0.01


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _ci(lo: float, hi: float) -> str:
    return f"95 % CI {100 * lo:.2f}-{100 * hi:.2f} %"


@dataclass(frozen=True)
class Headline:
    """A slide's headline: `figure` is what a list or a big box shows, `text` the one line that says what it means."""

    kind: str  # "reviewed", "negative", "calibrated", "flagged", "likely negative", "none flagged", "no cells"
    figure: str
    text: str


def headline(total: Parasitemia, review: dict | None = None, calibration: dict | None = None) -> Headline:
    """The slide's headline from its automatic count (`total`), its review so far (a summary's "review") and the
    laboratory calibration its count used, if any (a summary's "calibration", edge_app.calibration)."""
    review = review or {}
    calibrated = bool(calibration and calibration.get("used"))
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
    if calibrated and total.fraction > 0:
        return Headline("calibrated", _pct(total.fraction),
                        f"parasitemia {_pct(total.fraction)} ({_ci(lo, hi)}), corrected with this laboratory's own error "
                        f"rates from {calibration['slides']} reviewed slide{'s' if calibration['slides'] != 1 else ''}: "
                        f"{total.parasitized:,} of {total.cells:,} cells flagged; a microscopist's review confirms it"
                        f"{progress}")
    if total.parasitized and (total.fraction > 0 or not total.errors or hi > LIKELY_NEGATIVE_BOUND):
        automatic = (f"automatic estimate {_pct(total.fraction)} ({_ci(lo, hi)})" if total.fraction > 0 or not total.errors
                     else f"no more than false positives alone give, but up to {_pct(hi)} cannot be ruled out (automatic "
                          "95 % upper bound)")
        return Headline("flagged", f"{total.parasitized:,} flagged",
                        f"{total.parasitized:,} of {total.cells:,} cells flagged as possibly infected "
                        f"({_pct(total.raw_fraction)}): the figure awaits a microscopist's review{progress}; {automatic}")
    if total.parasitized:  # corrected to 0: no more than false positives alone give
        return Headline("likely negative", "likely negative",
                        f"likely negative: {total.parasitized:,} of {total.cells:,} cells flagged "
                        f"({_pct(total.raw_fraction)}), no more than false positives alone give; at most {_pct(hi)} "
                        f"(automatic 95 % upper bound); a microscopist's review of the flagged cells confirms it{progress}")
    if hi > LIKELY_NEGATIVE_BOUND:
        return Headline("none flagged", "none flagged",
                        f"no cell flagged in {total.cells:,} cells, too few to rule out up to {_pct(hi)} (automatic 95 % "
                        f"upper bound): count more fields{progress}")
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
