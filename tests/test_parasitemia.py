import numpy as np
import pytest

from edge_app.parasitemia import CountingErrors, Parasitemia, wilson_interval


def _wilson_by_roots(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson interval's definition: the p where |k/n - p| = z * sqrt(p (1 - p) / n), solved as a quadratic."""
    q = k / n
    a, b, c = 1 + z * z / n, -(2 * q + z * z / n), q * q
    lo, hi = sorted(np.roots([a, b, c]).real)
    return lo, hi


@pytest.mark.parametrize("k,n", [(1, 10), (5, 10), (9, 10), (3, 2000), (81, 263), (1000, 2000)])
def test_wilson_matches_its_definition(k, n):
    assert wilson_interval(k, n) == pytest.approx(_wilson_by_roots(k, n), abs=1e-9)


def test_wilson_edges():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)  # the textbook value for 0 of 10
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_reliability_needs_enough_cells():
    few = Parasitemia(cells=500, parasitized=10)
    assert not few.reliable and "500 cells counted" in few.warning()
    many = Parasitemia(cells=2500, parasitized=30)
    assert many.reliable and many.warning() is None
    assert many.percent_text().startswith("1.20 % (95 % CI 0.84-1.71 %) of 2,500 cells")
    assert Parasitemia(0, 0).percent_text() == "no cells counted"


def test_correction_undoes_known_error_rates():
    errors = CountingErrors(sensitivity=0.85, false_positive_rate=0.01)
    for true in (0.0, 0.01, 0.05, 0.2, 1.0):
        observed = true * 0.85 + (1 - true) * 0.01  # what such a classifier counts on average
        assert errors.correct(observed) == pytest.approx(true)
    assert errors.correct(0.0) == 0.0 and errors.correct(1.0) == 1.0  # clipped, never negative or above 1


def test_corrected_parasitemia_keeps_the_raw_count():
    errors = CountingErrors(0.85, 0.01)
    p = Parasitemia(cells=3000, parasitized=57, errors=errors)  # 1.9 % raw
    assert p.raw_fraction == pytest.approx(0.019)
    assert p.fraction == pytest.approx((0.019 - 0.01) / 0.84)
    lo, hi = p.interval
    raw_lo, raw_hi = wilson_interval(57, 3000)
    assert lo == pytest.approx(errors.correct(raw_lo)) and hi == pytest.approx(errors.correct(raw_hi))
    assert "raw count 57 = 1.90 %" in p.percent_text()
    assert p.as_dict()["corrected_for"] == {"sensitivity": 0.85, "false_positive_rate": 0.01,
                                            "infected_cells": None, "healthy_cells": None,
                                            "sensitivity_sd": None, "false_positive_rate_sd": None}
    assert CountingErrors(**p.as_dict()["corrected_for"]) == p.errors  # a summary gives back the rates it was made with


def test_impossible_error_rates_are_refused():
    with pytest.raises(ValueError):
        CountingErrors(sensitivity=0.4, false_positive_rate=0.5)  # worse than chance


def test_interval_widens_when_the_error_rates_are_uncertain():
    exact = Parasitemia(cells=3000, parasitized=57, errors=CountingErrors(0.85, 0.01))
    well_measured = Parasitemia(cells=3000, parasitized=57, errors=CountingErrors(0.85, 0.01, 200_000, 2_000_000))
    measured = Parasitemia(cells=3000, parasitized=57, errors=CountingErrors(0.85, 0.01, 160, 12_000))
    poorly = Parasitemia(cells=3000, parasitized=57, errors=CountingErrors(0.85, 0.01, 20, 500))

    def width(p):
        lo, hi = p.interval
        return hi - lo

    # rates measured on millions of cells are as good as exact: about the same interval
    assert well_measured.interval == pytest.approx(exact.interval, abs=0.0008)
    assert width(exact) < width(measured) < width(poorly)
    for p in (exact, measured, poorly):
        lo, hi = p.interval
        assert 0.0 <= lo <= p.fraction <= hi <= 1.0
    assert measured.interval == measured.interval  # seeded: the same report every time it is read
    assert measured.as_dict()["corrected_for"]["healthy_cells"] == 12_000


def test_uncertain_rates_keep_a_zero_count_at_zero():
    p = Parasitemia(cells=2500, parasitized=0, errors=CountingErrors(0.8, 0.005, 150, 10_000))
    lo, hi = p.interval
    assert p.fraction == 0.0 and lo == 0.0 and 0.0 < hi < 0.01  # not the "0 to 0" of correcting the count's bounds


def test_rates_that_vary_between_stains_widen_the_interval():
    """Rates measured on many cells but differing from run to run say less about a new slide than their counts suggest."""
    steady = CountingErrors(0.7, 0.01, 160, 12_000)
    varying = CountingErrors(0.7, 0.01, 160, 12_000, sensitivity_sd=0.3, false_positive_rate_sd=0.007)
    tiny_spread = CountingErrors(0.7, 0.01, 160, 12_000, sensitivity_sd=0.001, false_positive_rate_sd=0.0001)
    se_cells, fp_cells = varying.effective_cells()
    assert se_cells == pytest.approx(0.7 * 0.3 / 0.09 - 1) and fp_cells == pytest.approx(0.01 * 0.99 / 0.007 ** 2 - 1)
    assert tiny_spread.effective_cells() == (160, 12_000)  # spread below the counts' own: the counts decide
    a, b = Parasitemia(3000, 57, errors=steady), Parasitemia(3000, 57, errors=varying)
    assert a.fraction == b.fraction
    assert b.interval[0] <= a.interval[0] and b.interval[1] > a.interval[1] + 0.005
    with pytest.raises(ValueError):
        CountingErrors(0.7, 0.01, 160, 12_000, sensitivity_sd=0.6)


def _brute_force_interval(errors: CountingErrors, k: int, n: int, points: int = 1000, fp_points: int = 60) -> tuple[float, float]:
    """The same posterior summed over fine uniform grids of both rates: slow, but with no cleverness to get wrong."""
    import math

    from edge_app.parasitemia import _PREVALENCE_GRID, _PREVALENCE_WEIGHTS, SENSITIVITY_FLOOR, _beta_logpdf

    def grid(rate, cells, m, floor=1e-9):
        a, b = rate * cells + 0.5, (1 - rate) * cells + 0.5
        mean, sd = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        edges = np.linspace(max(floor, mean - 12 * sd), min(1 - 1e-9, mean + 12 * sd), m + 1)
        x = (edges[1:] + edges[:-1]) / 2
        w = np.exp(_beta_logpdf(x, a, b)) * np.diff(edges)
        return x, w / w.sum()

    se_cells, fp_cells = errors.effective_cells()
    se, se_w = grid(errors.sensitivity, se_cells, points, SENSITIVITY_FLOOR)
    fps, fp_w = grid(errors.false_positive_rate, fp_cells, fp_points)
    p = _PREVALENCE_GRID[:, None]
    lik = np.zeros(len(_PREVALENCE_GRID))
    best = (k * math.log(k / n) if k else 0.0) + ((n - k) * math.log1p(-k / n) if k < n else 0.0)
    for fp, w in zip(fps, fp_w):
        q = np.clip(se[None, :] * p + fp * (1 - p), 1e-300, 1 - 1e-16)
        lik += w * (np.exp(k * np.log(q) + (n - k) * np.log1p(-q) - best) * se_w).sum(axis=1)
    cdf = np.cumsum(lik * _PREVALENCE_WEIGHTS)
    lo, hi = np.interp([0.025, 0.975], cdf / cdf[-1], _PREVALENCE_GRID)
    return float(lo), float(hi)


def test_interval_with_a_sensitivity_that_varies_between_runs_is_the_posterior_not_sampling_noise():
    """Rates like the shipped counting block's (the sensitivity 0.742 +- 0.252 between runs: 2 cells' worth) leave a
    low sensitivity plausible, down to the floor, so the posterior has a long tail that sets the upper bound. It must
    be the posterior's, as a brute-force sum over fine grids of both rates gives it: a few hundred random draws put it
    anywhere from 3 to 38 % depending on the seed."""
    from edge_app.parasitemia import SENSITIVITY_FLOOR

    errors = CountingErrors(0.742, 0.00995, 159, 13_371, sensitivity_sd=0.252, false_positive_rate_sd=0.0054)
    for k in (30, 50):
        lo, hi = errors.interval(k, 2000)
        ref_lo, ref_hi = _brute_force_interval(errors, k, 2000)
        assert hi == pytest.approx(ref_hi, rel=0.02) and lo == pytest.approx(ref_lo, rel=0.15, abs=2e-4)
        assert k / 2000 / 0.742 < hi <= k / 2000 / SENSITIVITY_FLOOR  # wide, as a sensitivity this uncertain allows
    steady = CountingErrors(0.85, 0.01, 160, 12_000)
    assert steady.interval(40, 2000) == pytest.approx(_brute_force_interval(steady, 40, 2000), rel=0.02)


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 5000), (5000, 5000), (4990, 5000), (1, 3)])
def test_interval_holds_at_the_extremes(k, n):
    """Every cell or none called Parasitized, one cell, a share beyond what any plausible sensitivity gives: an
    interval inside [0, 1] round the estimate, never NaN."""
    for errors in (CountingErrors(0.742, 0.00995, 159, 13_371, sensitivity_sd=0.252, false_positive_rate_sd=0.0054),
                   CountingErrors(0.85, 0.01, 160, 12_000), CountingErrors(0.9, 0.01, 5, 20), CountingErrors(0.95, 0.0, 40, 10**9)):
        lo, hi = errors.interval(k, n)
        assert 0.0 <= lo <= hi <= 1.0 and not np.isnan(lo + hi)
        assert lo <= errors.correct(k / n) + 1e-9 or errors.correct(k / n) == 1.0


@pytest.mark.parametrize("k, n", [(0, 10_000), (15, 10_134), (44, 5_100)])
def test_fewer_calls_than_false_positives_alone_give_read_as_none_with_an_upper_bound_a_floor_makes_informative(k, n):
    """Reproduces: a slide of another laboratory with no malaria, 15 of 10,134 cells called Parasitized, read "0.00 %
    (95 % CI 0.00-93 %)": a sensitivity near 0 explained the calls as a heavy parasitemia. No pipeline worth correcting
    finds fewer than SENSITIVITY_FLOOR of the infected cells, so the upper bound is at most the calls over it (and
    the quadrature agrees with a brute-force sum, the case of no call at all included)."""
    from edge_app.parasitemia import SENSITIVITY_FLOOR

    errors = CountingErrors(0.742, 0.00995, 159, 13_371, sensitivity_sd=0.252, false_positive_rate_sd=0.0054)
    lo, hi = errors.interval(k, n)
    assert lo == 0.0 and errors.correct(k / n) == 0.0
    assert 0 < hi <= max(k, 3) / n / SENSITIVITY_FLOOR
    assert hi == pytest.approx(_brute_force_interval(errors, k, n)[1], rel=0.15)
