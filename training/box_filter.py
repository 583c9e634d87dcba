"""Fit the detector's box filter (`edge_app.box_filter`) on held-out runs of annotated fields, out of fold.

A detector scores fields it was trained on higher than new ones, so the
filter learns from each run's candidates as the detector trained *without*
that run found them (`runs/det-cv/runK`): what a shipped detector will do on
a new slide. A candidate is a cell when it is matched one to one to a box
at IoU >= 0.5 (training.fields' protocol; boxes on `difficult` cells are
left out). The probability from which a box is counted is the one whose
kept boxes best match the annotations on those runs (F1, as the detector's
own threshold is chosen).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge_app.box_filter import FLOOR, BoxFilter, box_features
from edge_app.detect import CellDetector
from edge_app.model import update_sidecar
from edge_app.preprocess import load_rgb
from training.fields import DIFFICULT, Box, match_boxes, not_on_difficult, pooled, score_field

#: Probabilities tried as the cut.
CUTS = np.round(np.arange(0.2, 0.801, 0.025), 3)


@dataclass(frozen=True)
class FieldCandidates:
    truth: list[Box]
    boxes: np.ndarray  # (N, 4) x, y, w, h
    features: np.ndarray  # (N, len(FEATURES))
    cell: np.ndarray  # (N,) matched to a cell's box
    counts: np.ndarray  # (N,) not on a difficult box: counts either way


def field_candidates(detector: CellDetector, rgb: np.ndarray, truth: list[Box]) -> FieldCandidates:
    """A field's candidates as `detect` would filter them, with their features and whether each is a boxed cell."""
    found = detector.candidates(rgb, floor=FLOOR)
    boxes = np.array([[d.x, d.y, d.width, d.height] for d in found], np.float64).reshape(-1, 4)
    cells = np.array([[b.x, b.y, b.w, b.h] for b in truth if b.kind != DIFFICULT], np.float64).reshape(-1, 4)
    cell = np.zeros(len(found), bool)
    cell[[j for _, j in match_boxes(cells, boxes)]] = True
    return FieldCandidates(truth, boxes, box_features(found, detector.threshold, rgb.shape[:2]), cell,
                           not_on_difficult(truth, boxes))


def run_candidates(detector: CellDetector, data: str | Path, names: list[str],
                   annotations: dict[str, list[Box]]) -> list[FieldCandidates]:
    return [field_candidates(detector, load_rgb(Path(data) / "images" / name), annotations[name]) for name in names]


def _f1(fields: list[FieldCandidates], keep: list[np.ndarray]) -> float:
    p = pooled([score_field(f.truth, f.boxes[k], np.zeros(int(k.sum()), bool)) for f, k in zip(fields, keep)])
    return 2 * p.matched / max(p.cells + p.detections, 1)


def fit(fields: list[FieldCandidates]) -> tuple[BoxFilter, dict[float, float]]:
    """The filter fitted on these fields' candidates, its cut the best F1 over CUTS; with F1 at every cut."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([f.features[f.counts] for f in fields])
    y = np.concatenate([f.cell[f.counts] for f in fields])
    if len(np.unique(y)) < 2:
        raise ValueError("the candidates need both cells and boxes that are not cells to fit a box filter")
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    model = LogisticRegression(max_iter=2000).fit((x - mean) / scale, y)
    uncut = BoxFilter(tuple(mean), tuple(scale), tuple(model.coef_[0]), float(model.intercept_[0]), 0.5)
    p = [uncut.probabilities(f.features) for f in fields]
    table = {float(c): _f1(fields, [q >= c for q in p]) for c in CUTS}
    best = max(table, key=table.get)
    return replace(uncut, cut=best), table


def write(detector_path: str | Path, box_filter: BoxFilter, fitted_on: str, table: dict[float, float]) -> None:
    block = box_filter.to_meta(fitted_on) | {"f1_by_cut": {str(c): round(v, 4) for c, v in table.items()}}
    update_sidecar(detector_path, "box_filter", block)
