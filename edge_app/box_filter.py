"""Which of the detector's candidate boxes to count: a logistic model on each box's score and shape in its field.

The detector's score alone decides badly at the edges of what it learnt.
Below its threshold lie cells it is unsure of in dense clumps and enlarged
infected cells; above it, slivers of cells cut by the image border, which
no microscopist counts, and boxes between two cells. What tells them apart
is where a box sits among the field's other boxes: its size against the
field's typical cell, how much of a cell it shows at the border, its shape,
how much of it a stronger box already covers. A logistic model on those,
fitted on held-out runs of annotated fields as the detector scored them
(`training.box_filter`, out of fold), is stored in the detector's sidecar
(`box_filter`) and decides; a sidecar without one keeps the detector's
threshold, large cells and cells alone (`edge_app.detect.kept_cells`).
Nothing here depends on the stain, so it holds on slides stained unlike
the training fields; magnification is measured from the field's own boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge_app.detect import Detection

#: The model's inputs, in order (`box_features`).
FEATURES = ("score", "log_area", "at_border", "shown", "elongation", "overlap", "covered", "score_at_border")
#: Candidates are decoded down to this score: below it the detector's boxes are almost never cells.
FLOOR = 0.25
#: A box within this many pixels of the image edge is cut by it.
BORDER_PX = 2
#: Most of a cell shown is enough: `shown` is capped here, so a long sliver does not count as more than a cell.
SHOWN_CAP = 1.5


def intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Area shared by every (x, y, w, h) box in `a` with every box in `b`: shape (len(a), len(b)).

    The one overlap measure behind the filter's features and the benchmarks'
    matching (training.fields.iou_matrix), so the two cannot differ.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0, y0 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    return np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)


def at_border(boxes: np.ndarray, field_shape: tuple[int, int]) -> np.ndarray:
    """Which (x, y, w, h) boxes the image edge cuts (within BORDER_PX): the cells a microscopist does not count whole."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = field_shape
    return (b[:, 0] <= BORDER_PX) | (b[:, 1] <= BORDER_PX) | (b[:, 0] + b[:, 2] >= w - BORDER_PX) \
        | (b[:, 1] + b[:, 3] >= h - BORDER_PX)


def box_features(found: list[Detection], threshold: float, field_shape: tuple[int, int]) -> np.ndarray:
    """(N, len(FEATURES)) for a field's candidate boxes: its confident boxes (at `threshold`) set the typical cell.

    score: the detector's; log_area: log of the box's area over the median
    confident box's; at_border: 1 for a box cut by the image edge; shown:
    its shorter side over a typical cell's side when cut (1 otherwise);
    elongation: log of its longer over its shorter side; overlap: its
    largest IoU with a higher-scoring box; covered: the largest share of it
    inside a higher-scoring box; score_at_border: score times at_border.
    """
    if not found:
        return np.zeros((0, len(FEATURES)))
    b = np.array([[d.x, d.y, d.width, d.height] for d in found], np.float64)
    s = np.array([d.score for d in found], np.float64)
    h, w = field_shape
    area = b[:, 2] * b[:, 3]
    confident = s >= threshold
    typical = float(np.median(area[confident] if confident.any() else area))
    border = at_border(b, field_shape).astype(np.float64)
    shorter = np.minimum(b[:, 2], b[:, 3])
    shown = np.where(border > 0, np.minimum(shorter / np.sqrt(typical), SHOWN_CAP), 1.0)
    elongation = np.log(np.maximum(b[:, 2], b[:, 3]) / shorter)
    inter = intersections(b, b)
    stronger = s[None, :] > s[:, None]
    overlap = np.where(stronger, inter / (area[:, None] + area[None, :] - inter), 0.0).max(axis=1)
    covered = np.where(stronger, inter / area[:, None], 0.0).max(axis=1)
    return np.stack([s, np.log(area / typical), border, shown, elongation, overlap, covered, s * border], axis=1)


@dataclass(frozen=True)
class BoxFilter:
    """A fitted model (standardised inputs, weights, intercept) and the probability from which a box is counted."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float
    cut: float

    @classmethod
    def from_meta(cls, block: dict) -> BoxFilter:
        """From a sidecar's `box_filter` block; ValueError when it is not one this app can use."""
        if tuple(block.get("features", ())) != FEATURES:
            raise ValueError(f"box filter on features {block.get('features')}, this app computes {list(FEATURES)}")
        mean, scale, weights = (tuple(float(v) for v in block[k]) for k in ("mean", "scale", "weights"))
        if not len(mean) == len(scale) == len(weights) == len(FEATURES) or min(scale) <= 0 \
                or not 0 < float(block["cut"]) < 1 or not all(np.isfinite([*mean, *weights, block["intercept"]])):
            raise ValueError("box filter block out of range")
        return cls(mean, scale, weights, float(block["intercept"]), float(block["cut"]))

    def to_meta(self, fitted_on: str) -> dict:
        return {"features": list(FEATURES), "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "intercept": self.intercept, "cut": self.cut, "fitted_on": fitted_on}

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        z = (features - np.array(self.mean)) / np.array(self.scale) @ np.array(self.weights) + self.intercept
        return 1 / (1 + np.exp(-z))

    def keep(self, found: list[Detection], threshold: float, field_shape: tuple[int, int]) -> list[Detection]:
        """The candidates counted as cells. A field with no confident box keeps none: nothing sets its typical cell."""
        if not any(d.score >= threshold for d in found):
            return []
        p = self.probabilities(box_features(found, threshold, field_shape))
        return [d for d, q in zip(found, p) if q >= self.cut]
