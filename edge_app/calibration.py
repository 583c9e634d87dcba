"""A laboratory's own counting rates, learnt from the slides its microscopists review.

The automatic estimate is corrected for the counting pipeline's error rates
(edge_app.parasitemia); the shipped ones were measured on other
laboratories' stains, and carrying them to a new stain is what fails
(models/README.md). A laboratory does not change its stain from slide to
slide, and every slide reviewed in `serve` is labelled data from exactly
that stain: every cell the app flagged was confirmed or rejected, and the
cells it did not flag but showed were looked at too. So each fully
reviewed slide adds its evidence (`Evidence`) to the laboratory's
calibration, kept in the device's slide register, and later slides of a
matching stain are corrected with the laboratory's own rates, the shipped
ones serving as the prior (`Calibration.errors`), whose weight fades as
reviews accumulate.

What a review shows, and what it cannot:

- False positives: exact. Every flagged cell is decided, so the flagged
  cells a reviewer rejected, over the cells that are not parasites, is the
  slide's false-positive rate at the counting threshold.
- Sensitivity: in part. The infected cells a review finds are those it is
  shown; among them, the share the app flagged is the counting
  sensitivity *relative to what a review shows*. The infected cells no
  review shows (scoring under the review threshold, neither enlarged nor
  set apart as white cells) are never seen; their share is the review
  block's (its sensitivity, measured on annotated fields, out of fold), so
  the laboratory's sensitivity is that relative share times the review's.
- Drift: rates vary from slide to slide even on one stain. Where the
  reviewed slides' own rates vary more than their cell counts explain,
  that spread is carried into the interval (CountingErrors' `*_sd`).

A slide whose stain is unlike the calibration's (`matches`) falls back to
the shipped rates, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edge_app.parasitemia import CountingErrors

#: A slide's stain matches a calibration when its cells' median colour, as chromaticity (each channel over their sum:
#: the stain's hue, not the lamp's brightness), is within this distance of the calibration's. The annotated fields'
#: slides of five lie within 0.025 of the first three of their own run, and 0.05-0.2 from the other runs'.
STAIN_DISTANCE = 0.04
#: Reviewed slides needed before a laboratory's rates are used (one slide's few infected cells say little).
MIN_SLIDES = 1
#: The shipped rates weigh as a prior at most this many cells' worth (healthy, infected): what their spread between the
#: three annotated runs is worth (335 and 2 cells, CountingErrors.effective_cells); a block measured on fewer runs
#: understates that spread, and must not drown a laboratory's own reviews.
PRIOR_CELLS = (335.0, 3.0)
#: How much the rates move from one slide of DRIFT_FIELDS fields to the next on one stain, beyond what their cells
#: explain (the standard deviation between the annotated runs' slides of 5 fields: the share of shown infected cells
#: flagged 0.00 / 0.21 / 0.20, false positives 0.010 / 0.002 / 0.012): a laboratory's rates, however well measured,
#: say this little about the next slide, less so for a slide of more fields, over which the drift averages out.
SENSITIVITY_DRIFT = 0.2
FALSE_POSITIVE_DRIFT = 0.01
DRIFT_FIELDS = 5


@dataclass(frozen=True)
class Evidence:
    """What one fully reviewed slide showed about the counting pipeline on its laboratory's stain."""

    slide_id: str
    reviewed: str  # when its last decision was made (ISO time)
    model_sha256: str
    threshold: float  # the counting threshold it was counted at
    cells: int  # red cells counted (white cells a reviewer put back included)
    flagged: int  # cells called Parasitized at the threshold
    flagged_rejected: int  # of those, rejected by the reviewer: false positives
    parasites: int  # infected cells the review found, flagged or not
    parasites_flagged: int  # of those, flagged
    stain: tuple[float, float, float] | None  # the slide's cells' median colour (RGB), from its field checks

    @property
    def healthy(self) -> int:
        return max(self.cells - self.parasites, 0)


def evidence(summary: dict, review: dict, stain: tuple[float, float, float] | None) -> Evidence | None:
    """A slide's evidence from its summary and its review (edge_app.review.Review.as_dict), or None when it is not
    fully reviewed, or was counted without error rates (at a threshold given by hand) and so says nothing of them."""
    total = summary["total"]
    if review.get("status") != "reviewed" or review.get("parasitemia") is None or not total.get("corrected_for"):
        return None
    return Evidence(
        slide_id=str(summary.get("id")), reviewed=str(review.get("last_decision") or summary.get("counted") or ""),
        model_sha256=str(summary.get("model_sha256")), threshold=float(summary["threshold"]),
        cells=int(review["cells_counted"]), flagged=int(review["flagged"]), flagged_rejected=int(review["flagged_rejected"]),
        parasites=int(review["confirmed_parasitised"]), parasites_flagged=int(review["flagged_confirmed"]), stain=stain)


def chromaticity(rgb: Sequence[float]) -> tuple[float, float, float]:
    """A colour's share of each channel: the same for a stain under a brighter or dimmer lamp."""
    total = max(float(sum(rgb)), 1e-6)
    return tuple(float(v) / total for v in rgb)


def slide_stain(checks: Sequence[dict]) -> tuple[float, float, float] | None:
    """A slide's cells' median colour over its fields (their field checks' `cell_colour`); None without any."""
    colours = [c["stats"]["cell_colour"] for c in checks if c.get("stats") and c["stats"].get("cell_colour")]
    return tuple(float(v) for v in np.median(np.array(colours, float), axis=0)) if colours else None


@dataclass(frozen=True)
class Calibration:
    """A laboratory's reviewed slides, for one model at one counting threshold, with the shipped rates as prior."""

    slides: tuple[Evidence, ...]
    prior: CountingErrors  # the shipped counting block's rates
    review_sensitivity: float  # the shipped review block's: the share of infected cells a review shows

    @property
    def usable(self) -> bool:
        return len(self.slides) >= MIN_SLIDES

    @property
    def stain(self) -> tuple[float, float, float] | None:
        """The reviewed slides' mean stain colour (RGB)."""
        colours = [s.stain for s in self.slides if s.stain]
        return tuple(float(v) for v in np.mean(np.array(colours, float), axis=0)) if colours else None

    def matches(self, stain: tuple[float, float, float] | None) -> bool:
        """Whether a slide of this stain may be corrected with these rates (a slide or calibration of no recorded
        stain may not)."""
        mine = self.stain
        return bool(self.usable and mine and stain and math.dist(chromaticity(mine), chromaticity(stain)) <= STAIN_DISTANCE)

    def errors(self, fields: int = DRIFT_FIELDS) -> CountingErrors:
        """The laboratory's rates for a slide of `fields` fields: the shipped ones' Beta distributions (their cells'
        worth of evidence, CountingErrors.effective_cells, at most PRIOR_CELLS) updated with the reviewed slides'
        counts, with the drift from slide to slide (the reviewed slides' own spread where it exceeds what their counts
        explain, and at least SENSITIVITY_DRIFT and FALSE_POSITIVE_DRIFT, averaged over the slide's fields)."""
        se_cells, fp_cells = self.prior.effective_cells()
        fp_cells, se_cells = min(fp_cells, PRIOR_CELLS[0]), min(se_cells, PRIOR_CELLS[1])
        fp = sum(s.flagged_rejected for s in self.slides)
        healthy = sum(s.healthy for s in self.slides)
        fpr = (self.prior.false_positive_rate * fp_cells + fp) / (fp_cells + healthy)
        # The share of shown infected cells that are flagged; the prior's, its sensitivity over the review's.
        prior_relative = min(self.prior.sensitivity / self.review_sensitivity, 1.0)
        found = sum(s.parasites for s in self.slides)
        flagged = sum(s.parasites_flagged for s in self.slides)
        relative = (prior_relative * se_cells + flagged) / (se_cells + found)
        sensitivity = relative * self.review_sensitivity
        averaged = math.sqrt(DRIFT_FIELDS / max(fields, DRIFT_FIELDS))
        fpr_sd = max(_excess_spread([(s.flagged_rejected, s.healthy) for s in self.slides], fpr) or 0.0,
                     FALSE_POSITIVE_DRIFT * averaged)
        se_sd = max(_excess_spread([(s.parasites_flagged, s.parasites) for s in self.slides], relative) or 0.0,
                    SENSITIVITY_DRIFT * averaged) * self.review_sensitivity
        return CountingErrors(max(sensitivity, fpr + 1e-6), fpr, max(1, round(se_cells + found)), max(1.0, fp_cells + healthy),
                              min(se_sd, 0.49), min(fpr_sd, 0.49))

    def describe(self) -> dict:
        """What the calibration holds, for summary.json, the report, `serve` and `calibration show`."""
        e = self.errors()
        lo_se, hi_se = _beta_interval(e.sensitivity, e.effective_cells()[0])
        lo_fp, hi_fp = _beta_interval(e.false_positive_rate, e.effective_cells()[1])
        return {"slides": len(self.slides), "since": min((s.reviewed for s in self.slides), default=None),
                "cells_reviewed": sum(s.cells for s in self.slides), "parasites_confirmed": sum(s.parasites for s in self.slides),
                "sensitivity": e.sensitivity, "sensitivity_ci95": [lo_se, hi_se],
                "false_positive_rate": e.false_positive_rate, "false_positive_rate_ci95": [lo_fp, hi_fp],
                "stain": None if self.stain is None else [round(v, 1) for v in self.stain]}


def _excess_spread(counts: list[tuple[int, int]], pooled: float) -> float | None:
    """The standard deviation of a rate between slides beyond what their counts explain (None when nothing beyond, or
    fewer than two slides with any cells): method of moments on the slides' own rates."""
    usable = [(k, n) for k, n in counts if n > 0]
    if len(usable) < 2:
        return None
    rates = np.array([k / n for k, n in usable])
    binomial = np.mean([pooled * (1 - pooled) / n for _, n in usable])
    excess = float(np.var(rates, ddof=1)) - binomial
    return math.sqrt(excess) if excess > 0 and math.sqrt(excess) < 0.5 else None


def _beta_interval(rate: float, cells: float) -> tuple[float, float]:
    """A rate's 95 % interval from its Jeffreys Beta distribution over `cells` cells' worth of evidence."""
    from statistics import NormalDist

    a, b = rate * cells + 0.5, (1 - rate) * cells + 0.5
    mean, sd = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    z = NormalDist().inv_cdf(0.975)
    return max(0.0, mean - z * sd), min(1.0, mean + z * sd)
