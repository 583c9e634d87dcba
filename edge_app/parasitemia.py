"""Parasitemia: the share of red cells that are infected, with a 95 % Wilson interval.

Pure functions over counts. The Wilson score interval is used rather than the
textbook normal one because parasitemia is usually a few percent or less,
where the normal interval collapses to zero width or dips below 0.

A classifier's raw count is biased: at 1 % parasitemia, a false-positive rate
of 1 % among the 99 % healthy cells doubles the count. When the counting
pipeline's error rates at its threshold were measured on cells it never
trained on (the sidecar's "counting" block), the estimate is corrected for
them (Rogan and Gladen 1978), and the interval carries both the count's and
the rates' uncertainty (`CountingErrors.interval`); the raw count is always
kept.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np

#: WHO thin-film practice counts parasites against a few thousand red cells;
#: below this the estimate is reported as not reliable.
MIN_RELIABLE_CELLS = 2000

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Two-sided Wilson score interval for k successes in n trials (0..1); (0, 1) when n is 0."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # The exact bounds are 0 at k = 0 and 1 at k = n; rounding must not leave them off by 1e-17.
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


@dataclass(frozen=True)
class CountingErrors:
    """The counting pipeline's error rates at its counting threshold, measured on cells it never trained on.

    `infected_cells` and `healthy_cells` are how many cells each rate was
    measured on: with them, the corrected interval carries the rates'
    own uncertainty; without them the rates are taken as exact. The
    `*_sd` are the rates' standard deviations between groups of fields
    measured apart (runs of differently stained fields): a new slide's
    stain is another draw from those, so where they exceed what the cell
    counts alone imply, the interval carries them instead.
    """

    sensitivity: float  # share of infected cells called Parasitized
    false_positive_rate: float  # share of healthy cells called Parasitized
    infected_cells: int | None = None
    healthy_cells: float | None = None  # math.inf: the rate is exact (after a review)
    sensitivity_sd: float | None = None
    false_positive_rate_sd: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.false_positive_rate < self.sensitivity <= 1:
            raise ValueError(f"need 0 <= false positive rate < sensitivity <= 1, got {self.false_positive_rate}, {self.sensitivity}")
        if any(n is not None and n < 1 for n in (self.infected_cells, self.healthy_cells)):
            raise ValueError(f"rates need at least one cell each, got {self.infected_cells}, {self.healthy_cells}")
        if any(sd is not None and not 0 <= sd < 0.5 for sd in (self.sensitivity_sd, self.false_positive_rate_sd)):
            raise ValueError(f"standard deviations of rates must be in [0, 0.5), got {self.sensitivity_sd}, {self.false_positive_rate_sd}")

    def effective_cells(self) -> tuple[float, float]:
        """How many cells' worth of evidence each rate carries: fewer than were counted when the rates vary between runs.

        The Beta distribution with the rate as its mean and the larger of the
        two variances (binomial over the cells, or between runs) has
        `rate * (1 - rate) / variance - 1` cells' worth of evidence.
        """
        out = []
        for rate, n, sd in ((self.sensitivity, self.infected_cells, self.sensitivity_sd),
                            (self.false_positive_rate, self.healthy_cells, self.false_positive_rate_sd)):
            spread = rate * (1 - rate)
            if sd and spread > 0 and sd * sd * (n + 1) > spread:
                n = max(1.0, spread / (sd * sd) - 1)
            out.append(float(n))
        return out[0], out[1]

    def after_review(self) -> "CountingErrors":
        """The rates once a microscopist has confirmed or rejected every cell called Parasitized: no false positive is
        left (exactly: `healthy_cells` is infinite), only the cells the pipeline missed, at its measured sensitivity."""
        return replace(self, false_positive_rate=0.0, false_positive_rate_sd=None, healthy_cells=math.inf)

    @property
    def measured(self) -> bool:
        """Whether the number of cells behind the rates is known, so their uncertainty can be carried."""
        return self.infected_cells is not None and self.healthy_cells is not None

    def correct(self, observed: float) -> float:
        """The true share that would, on average, give this observed share (Rogan-Gladen), within [0, 1]."""
        return min(1.0, max(0.0, (observed - self.false_positive_rate) / (self.sensitivity - self.false_positive_rate)))

    def interval(self, k: int, n: int) -> tuple[float, float]:
        """95 % interval of the true share for k of n cells called Parasitized, the rates' uncertainty included.

        The count is binomial with mean se * p + fp * (1 - p); the rates are
        uncertain as their Jeffreys posteriors say (Beta(k + 1/2, n - k + 1/2)
        of the cells they were measured on, n fewer where the rates vary
        between runs: `effective_cells`), the likelihood of every true share
        p is averaged over them (by quadrature, `_posterior_interval`), and
        the 2.5th and 97.5th percentiles of the resulting posterior of p
        (flat prior) are the interval. Unlike correcting a count's
        interval's ends, this stays honest when the count is at or below
        what false positives alone would give.
        With rates of unknown provenance only the count's interval is
        corrected, as if the rates were exact.
        """
        if not self.measured:
            lo, hi = wilson_interval(k, n)
            return self.correct(lo), self.correct(hi)
        lo, hi = _posterior_interval(self.sensitivity, self.false_positive_rate, *self.effective_cells(), k, n)
        # A count no higher than false positives alone would give is best explained by no parasites: the interval
        # then starts at 0, as Wilson's does for a count of 0, rather than above the estimate.
        return (0.0 if self.correct(k / n if n else 0.0) == 0.0 else lo), hi


@functools.lru_cache(maxsize=256)
def _posterior_interval(sensitivity: float, fpr: float, infected_cells: float, healthy_cells: float, k: int, n: int
                        ) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the posterior of the true share (see `CountingErrors.interval`).

    The likelihood of a true share p, averaged over both rates, is a double
    integral whose integrand is sharp along a ridge: the sensitivities and
    false-positive rates for which se * p + fp * (1 - p) is the observed
    share k / n. It is computed by quadrature, not random draws: the
    false-positive rate over strata of its distribution (finer in the tails,
    which set the lower bound), and for each p and false-positive rate, the
    sensitivity on a grid across the ridge, within its distribution's range
    (when the sensitivity is uncertain, the ridge's far end sets the upper
    bound: a few hundred random draws sampled it so unevenly that the bound
    moved from 3 to 38 % with the seed).
    """
    se_a, se_b = sensitivity * infected_cells + 0.5, (1 - sensitivity) * infected_cells + 0.5
    lo, hi = _rate_span(se_a, se_b)
    lo = min(max(lo, SENSITIVITY_FLOOR), hi - 1e-6)  # see SENSITIVITY_FLOOR
    fps, fp_weights = _false_positive_strata(fpr, healthy_cells)
    share = k / n
    width = math.sqrt(max(share * (1 - share), 1 / n) / n)  # the observed share's standard error
    p = _PREVALENCE_GRID[None, :, None]
    fp = fps[:, None, None]
    ridge = (share - fp * (1 - p)) / np.maximum(p, 1e-12)
    half = RIDGE_WIDTHS * width / np.maximum(p, 1e-12)
    # Away from the ridge the likelihood is nil: integrate where the ridge and the sensitivity's range overlap, or, where
    # the ridge runs outside that range, over its end nearest the ridge: above the range, a grid step of it wide;
    # below it (fewer cells called than false positives alone would give), over the sensitivities the likelihood falls
    # off across, which it does as exp(-(n - k) p (se - lo)): a few of those lengths, never just a grid step.
    edge = (hi - lo) / SENSITIVITY_POINTS
    falloff = np.minimum(hi - lo, FALLOFF_LENGTHS / np.maximum((n - k) * p, 1e-12))
    start = np.clip(ridge - half, lo, hi - edge)
    stop = np.where(ridge + half < lo, lo + np.maximum(falloff, 1e-9), np.clip(ridge + half, lo + edge, hi))
    se = start + (stop - start) * np.linspace(0.0, 1.0, SENSITIVITY_POINTS)
    q = np.clip(se * p + fp * (1 - p), 1e-300, 1 - 1e-16)
    log_f = k * np.log(q) + (n - k) * np.log1p(-q) + _beta_logpdf(se, se_a, se_b)
    f = np.exp(log_f - log_f.max())
    step = (stop - start)[..., 0] / (SENSITIVITY_POINTS - 1)
    lik = ((f.sum(axis=2) - (f[..., 0] + f[..., -1]) / 2) * step * fp_weights[:, None]).sum(axis=0)
    lik = lik * _PREVALENCE_WEIGHTS
    cdf = np.cumsum(lik) / lik.sum()
    lo_p, hi_p = np.interp([0.025, 0.975], cdf, _PREVALENCE_GRID)
    return (0.0 if cdf[0] >= 0.025 else float(lo_p)), float(hi_p)


#: No counting pipeline worth correcting finds fewer than this share of a slide's infected cells: the lowest measured
#: on any stain, held out, is 0.29 (models/DETAILS.md, "Real fields"). The rates' Beta distribution, fitted to how
#: much the sensitivity varied between three runs, would otherwise let a sensitivity near 0 explain a handful of
#: cells called Parasitized as a heavy parasitemia, and a slide of 10,000 cells with 15 flagged, fewer than false
#: positives alone give, read "0 %, 95 % CI 0-93 %". Below this floor the sensitivity is taken as impossible.
SENSITIVITY_FLOOR = 0.2

#: The quadrature's resolution (`_posterior_interval`): points over the sensitivities that explain the count, how
#: many standard errors of the observed share either side of it they span, and strata of the false-positive rate's
#: distribution between its tails (which get 8 more).
SENSITIVITY_POINTS = 24
RIDGE_WIDTHS = 8.0
FALLOFF_LENGTHS = 30.0
FALSE_POSITIVE_STRATA = 6
_TAILS = np.array([0.0005, 0.002, 0.01, 0.03])

#: Where the posterior of a parasitemia is evaluated: fine below 10 % (where slides are), coarse above.
_PREVALENCE_GRID = np.concatenate([np.linspace(0.0, 0.1, 401), np.linspace(0.1, 1.0, 181)[1:]])
_PREVALENCE_WEIGHTS = np.gradient(_PREVALENCE_GRID)


def _beta_logpdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    return (a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


def _rate_span(a: float, b: float) -> tuple[float, float]:
    """Where Beta(a, b) has practically all its mass: 12 standard deviations either side of its mean, within (0, 1)."""
    mean, sd = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    return max(1e-9, mean - 12 * sd), min(1 - 1e-9, mean + 12 * sd)


def _false_positive_strata(fpr: float, cells: float) -> tuple[np.ndarray, np.ndarray]:
    """The false-positive rate's distribution as a few values and their probabilities: the middle of each stratum."""
    if math.isinf(cells):
        return np.array([fpr]), np.ones(1)
    a, b = fpr * cells + 0.5, (1 - fpr) * cells + 0.5
    edges_u = np.unique(np.concatenate([[0.0], _TAILS, np.linspace(0.06, 0.94, FALSE_POSITIVE_STRATA + 1), 1 - _TAILS[::-1], [1.0]]))
    edges = np.linspace(*_rate_span(a, b), 8001)
    x = (edges[1:] + edges[:-1]) / 2
    mass = np.exp(_beta_logpdf(x, a, b)) * np.diff(edges)
    cdf = (np.cumsum(mass) - mass / 2) / mass.sum()
    return np.interp((edges_u[1:] + edges_u[:-1]) / 2, cdf, x), np.diff(edges_u)


@dataclass(frozen=True)
class Parasitemia:
    """Infected cells over counted cells, with the interval and a reliability verdict.

    With `errors`, `fraction` and `interval` are corrected for the classifier's
    known error rates; `raw_fraction` is the plain count.
    """

    cells: int
    parasitized: int
    min_cells: int = MIN_RELIABLE_CELLS
    errors: CountingErrors | None = None

    @property
    def raw_fraction(self) -> float:
        return self.parasitized / self.cells if self.cells else 0.0

    @property
    def fraction(self) -> float:
        return self.errors.correct(self.raw_fraction) if self.errors else self.raw_fraction

    @property
    def interval(self) -> tuple[float, float]:
        if self.errors and self.cells:
            return self.errors.interval(self.parasitized, self.cells)
        return wilson_interval(self.parasitized, self.cells)

    @property
    def reliable(self) -> bool:
        return self.cells >= self.min_cells

    def percent_text(self) -> str:
        """E.g. "1.20 % (95 % CI 0.83-1.73 %) of 2,500 cells"."""
        if not self.cells:
            return "no cells counted"
        lo, hi = self.interval
        text = f"{100 * self.fraction:.2f} % (95 % CI {100 * lo:.2f}-{100 * hi:.2f} %) of {self.cells:,} cells"
        if self.errors:
            text += f"; raw count {self.parasitized:,} = {100 * self.raw_fraction:.2f} %"
        return text

    def warning(self) -> str | None:
        """Why the figure should not be trusted yet, or None."""
        if self.reliable:
            return None
        return (f"only {self.cells:,} cells counted: at least {self.min_cells:,} are needed for a reliable "
                "parasitemia (WHO thin-film practice); capture more fields")

    def as_dict(self) -> dict:
        lo, hi = self.interval
        return {"cells": self.cells, "parasitized": self.parasitized, "parasitemia": self.fraction,
                "ci95": [lo, hi], "raw_parasitemia": self.raw_fraction,
                "corrected_for": None if self.errors is None else {
                    "sensitivity": self.errors.sensitivity, "false_positive_rate": self.errors.false_positive_rate,
                    "infected_cells": self.errors.infected_cells,
                    "healthy_cells": None if self.errors.healthy_cells == math.inf else self.errors.healthy_cells,
                    "sensitivity_sd": self.errors.sensitivity_sd, "false_positive_rate_sd": self.errors.false_positive_rate_sd},
                "reliable": self.reliable, "min_cells": self.min_cells, "warning": self.warning()}
