import numpy as np
import pytest

from edge_app.parasitemia import Parasitemia, wilson_interval


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
