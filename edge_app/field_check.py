"""Does a field look like the fields the models were trained on? Stain colour, cell size and focus, checked per field.

A count on a field unlike any training field (another stain, a wrong
objective, a blurred image) can be far off without anything else showing
it, so each field's measurements are compared with the ranges seen on the
training fields (the detector's sidecar, "field_ranges") and every way it
falls outside becomes a warning in the CLI output, summary.json and the
report. The measurements are cheap: medians over pixels the pipeline has
already found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge_app.stain import cell_colour

if TYPE_CHECKING:
    from edge_app.detect import CellDetector

#: How far outside the training fields' range a field may fall before it is flagged, as a share of that range
#: (the training fields are few: their range understates what still works).
MARGIN = 0.25
#: A field whose sharpness is below this share of the least sharp training field's is out of focus (a blur of
#: 1.2 pixels already halves it; the training fields' own sharpness spans a factor of 8 between stains).
BLUR_RATIO = 0.5
#: How the stain colour warning begins.
STAIN_WARNING = "stain colour unlike the training fields"
#: A field where no red cell was found: never a quiet zero, and what to try before taking it again.
EMPTY_WARNING = ("no red cells found: this field needs a look. Check that it is a thin film under the 100x oil objective, "
                 "in focus, and neither too dark nor too bright (exposure), then take it again")


@dataclass(frozen=True)
class FieldStats:
    cell_colour: tuple[float, float, float]  # median RGB of the cells' pixels
    cell_size: float  # median cell box side in the detector's input pixels (field pixels x its scale)
    sharpness: float  # variance of the green channel's Laplacian over its variance: focus, independent of contrast

    def as_dict(self) -> dict:
        return {"cell_colour": [round(v, 1) for v in self.cell_colour], "cell_size": round(self.cell_size, 2),
                "sharpness": round(self.sharpness, 4)}


def field_stats(rgb: np.ndarray, cells: list, scale: float) -> FieldStats | None:
    """Measurements of one field from the cells found in it (edge_app.smear.Cell); None when none was found."""
    if not cells:
        return None
    colour = cell_colour([c.crop for c in cells])
    if colour is None:
        return None
    size = float(np.median([max(c.width, c.height) for c in cells])) * scale
    green = rgb[..., 1].astype(np.float32)
    sharpness = float(cv2.Laplacian(green, cv2.CV_32F).var() / max(float(green.var()), 1e-6))
    return FieldStats(tuple(float(c) for c in colour), size, sharpness)


def check_field(rgb: np.ndarray, cells: list, detector: CellDetector | None) -> tuple[FieldStats | None, list[str]]:
    """One field's measurements and its warnings against `detector`'s training fields (no ranges without a detector)."""
    stats = field_stats(rgb, cells, detector.scale if detector is not None else 1.0)
    return stats, warnings(stats, detector.meta.get("field_ranges") if detector is not None else None)


def training_ranges(stats: list[FieldStats]) -> dict:
    """The ranges of the training fields' measurements, for the detector's sidecar."""
    colours = np.array([s.cell_colour for s in stats])
    return {"cell_colour": {"min": colours.min(axis=0).round(1).tolist(), "max": colours.max(axis=0).round(1).tolist()},
            "cell_size": {"min": round(min(s.cell_size for s in stats), 2), "max": round(max(s.cell_size for s in stats), 2)},
            "sharpness": {"min": round(min(s.sharpness for s in stats), 4), "max": round(max(s.sharpness for s in stats), 4)}}


def _outside(value: float, lo: float, hi: float) -> bool:
    pad = MARGIN * (hi - lo)
    return value < lo - pad or value > hi + pad


def warnings(stats: FieldStats | None, ranges: dict | None) -> list[str]:
    """Why this field's count may not be trusted: one short sentence per way it differs from the training fields."""
    if stats is None:
        return [EMPTY_WARNING]
    if not ranges:
        return []
    out = []
    lo, hi = ranges["cell_colour"]["min"], ranges["cell_colour"]["max"]
    if any(_outside(v, a, b) for v, a, b in zip(stats.cell_colour, lo, hi)):
        rgb = ", ".join(f"{v:.0f}" for v in stats.cell_colour)
        out.append(f"{STAIN_WARNING} (cells RGB {rgb}): check the staining and white balance")
    size = ranges["cell_size"]
    if _outside(stats.cell_size, size["min"], size["max"]):
        out.append(f"cells {stats.cell_size:.0f} px at the detector's scale, "
                   f"trained on {size['min']:.0f}-{size['max']:.0f} (found at their own scale; other magnifications are not "
                   "validated): check the objective (100x oil) and the camera resolution")
    if stats.sharpness < BLUR_RATIO * ranges["sharpness"]["min"]:
        out.append("blurred: the field looks out of focus; refocus and take it again")
    return out
