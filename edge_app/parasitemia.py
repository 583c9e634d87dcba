"""Parasitemia: the share of red cells that are infected, with a 95 % Wilson interval.

Pure functions over counts. The Wilson score interval is used rather than the
textbook normal one because parasitemia is usually a few percent or less,
where the normal interval collapses to zero width or dips below 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
class Parasitemia:
    """Infected cells over counted cells, with the interval and a reliability verdict."""

    cells: int
    parasitized: int
    min_cells: int = MIN_RELIABLE_CELLS

    @property
    def fraction(self) -> float:
        return self.parasitized / self.cells if self.cells else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.parasitized, self.cells)

    @property
    def reliable(self) -> bool:
        return self.cells >= self.min_cells

    def percent_text(self) -> str:
        """E.g. "1.20 % (95 % CI 0.83-1.73 %) of 2,500 cells"."""
        if not self.cells:
            return "no cells counted"
        lo, hi = self.interval
        return f"{100 * self.fraction:.2f} % (95 % CI {100 * lo:.2f}-{100 * hi:.2f} %) of {self.cells:,} cells"

    def warning(self) -> str | None:
        """Why the figure should not be trusted yet, or None."""
        if self.reliable:
            return None
        return (f"only {self.cells:,} cells counted: at least {self.min_cells:,} are needed for a reliable "
                "parasitemia (WHO thin-film practice); capture more fields")

    def as_dict(self) -> dict:
        lo, hi = self.interval
        return {"cells": self.cells, "parasitized": self.parasitized, "parasitemia": self.fraction,
                "ci95": [lo, hi], "reliable": self.reliable, "min_cells": self.min_cells, "warning": self.warning()}
