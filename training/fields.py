"""Annotated microscope fields: reading the boxes, grouping frames into runs, counting them as the app does, and
scoring a count against them.

One place for the field protocol, so the real-field benchmark, the tests and
the model card cannot score differently:

- annotations are IML-Malaria's ``annotations.json``: one entry per image,
  ``{"image_name", "objects": [{"type", "bbox": {"x", "y", "w", "h"}}]}``,
  (x, y) the top-left corner;
- ``difficult`` boxes count neither way: they are left out of the truth, and
  a detection matching one is left out of the detections;
- infected = ring, trophozoite, schizont, gametocyte; a red cell box is
  ``red blood cell``; true parasitemia = infected boxes / all other boxes;
- red cells are matched one to one at IoU >= 0.5 (the assignment with the
  most matches, then the largest summed IoU); an infected box is found when
  any detection called Parasitized overlaps it at IoU >= 0.3.

Pure numpy and scipy: nothing here needs TensorFlow.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge_app.box_filter import intersections

if TYPE_CHECKING:
    from edge_app.detect import CellDetector
    from edge_app.model import ModelBundle

INFECTED = ("ring", "trophozoite", "schizont", "gametocyte")
HEALTHY = "red blood cell"
DIFFICULT = "difficult"
MATCH_IOU = 0.5
INFECTED_IOU = 0.3
#: A detection overlapping every box less than this is on no annotated cell: a white cell, a smudge, debris,
#: or a red cell the annotators left unboxed (benchmarks/unmatched_audit.py sorts them by eye).
OFF_BOX_IOU = 0.1
#: Consecutive camera frames further apart than this in number start a new run.
RUN_GAP = 20


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    kind: str = HEALTHY

    @property
    def infected(self) -> bool:
        return self.kind in INFECTED


def load_annotations(path: str | Path) -> dict[str, list[Box]]:
    """Boxes per image name, from an IML-Malaria style annotations.json."""
    entries = json.loads(Path(path).read_text())
    out: dict[str, list[Box]] = {}
    for e in entries:
        boxes = []
        for o in e["objects"]:
            b = o["bbox"]
            boxes.append(Box(int(b["x"]), int(b["y"]), int(b["w"]), int(b["h"]), str(o["type"])))
        out[str(e["image_name"])] = boxes
    return out


def runs_of(names: list[str]) -> list[list[str]]:
    """Image names grouped into runs of consecutive camera frames (by the number in the name), in order.

    Consecutive frames show one slide, so a split that puts frames of one run
    on both sides leaks; cross-validation folds are whole runs.
    """
    def number(name: str) -> int:
        digits = re.findall(r"\d+", Path(name).stem)
        if not digits:
            raise ValueError(f"no frame number in {name!r}")
        return int(digits[-1])

    ordered = sorted(names, key=number)
    runs: list[list[str]] = []
    for name in ordered:
        if runs and number(name) - number(runs[-1][-1]) <= RUN_GAP:
            runs[-1].append(name)
        else:
            runs.append([name])
    return runs


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every (x, y, w, h) box in `a` against every box in `b`: shape (len(a), len(b))."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    inter = intersections(a, b)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def match_boxes(truth: np.ndarray, detected: np.ndarray, min_iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """One-to-one (truth index, detection index) pairs with IoU >= min_iou: as many as possible, then the best overlap."""
    return _pairs(iou_matrix(truth, detected), min_iou)


def _pairs(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """match_boxes on an IoU matrix already computed (score_field needs the matrix for its other counts too)."""
    if not iou.size:
        return []
    ok = iou >= min_iou
    # Every allowed pair is worth more than any sum of IoUs, so the number of matches comes first.
    cost = np.where(ok, -(sum(iou.shape) + iou), 0.0)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if ok[r, c]]


@dataclass(frozen=True)
class FieldScore:
    """One field's count against its annotation (difficult boxes and their detections left out)."""

    cells: int  # annotated cells, healthy + infected
    infected: int
    detections: int
    matched: int  # one-to-one at IoU >= 0.5
    infected_found: int  # infected boxes overlapped (IoU >= 0.3) by a detection called Parasitized
    healthy_matched: int  # healthy boxes matched to a detection
    healthy_called_parasitized: int  # of those, matched to a detection called Parasitized
    called_parasitized: int  # detections called Parasitized
    infected_unboxed: int  # infected boxes no detection overlaps at IoU >= 0.3: missed by the detector, whatever the call
    called_off_boxes: int  # detections called Parasitized that overlap no box (IoU < OFF_BOX_IOU)

    @property
    def recall(self) -> float:
        return self.matched / self.cells if self.cells else float("nan")

    @property
    def precision(self) -> float:
        return self.matched / self.detections if self.detections else float("nan")

    @property
    def true_parasitemia(self) -> float:
        return self.infected / self.cells if self.cells else 0.0

    @property
    def raw_parasitemia(self) -> float:
        return self.called_parasitized / self.detections if self.detections else 0.0


def load_points(labels: str | Path) -> dict[str, np.ndarray]:
    """Labelled points per field, keyed by the file's stem, from a folder of text files with a line `x y class` per
    cell (Chula RBC-12's labels): an (N, 2) array of x, y in field pixels each. The class is not needed to score
    detection: every labelled point is a red cell, whatever its shape."""
    out: dict[str, np.ndarray] = {}
    for path in sorted(Path(labels).glob("*.txt")):
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        try:
            out[path.stem] = np.array([[float(r[0]), float(r[1])] for r in rows], np.float64).reshape(-1, 2)
        except (IndexError, ValueError):
            raise ValueError(f"{path}: expected lines of `x y class`") from None
    return out


def match_points(points: np.ndarray, boxes: np.ndarray) -> int:
    """How many points are found by these (x, y, w, h) boxes, one to one: a point is found when a box holds it, and a
    box finds one point at most (the assignment with the most pairs, then the points nearest their box's middle)."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(points) or not len(boxes):
        return 0
    px, py = points[:, :1], points[:, 1:]
    x, y, w, h = (boxes[:, i][None, :] for i in range(4))
    inside = (px >= x) & (px <= x + w) & (py >= y) & (py <= y + h)
    # Distance from the box's middle in half-sides: under 1 for every point inside it, so a pair is worth more than it.
    gap = np.hypot((px - x - w / 2) / np.maximum(w, 1), (py - y - h / 2) / np.maximum(h, 1))
    rows, cols = linear_sum_assignment(np.where(inside, gap - 2.0, 0.0))
    return int(inside[rows, cols].sum())


def not_on_difficult(truth: list[Box], detected: np.ndarray) -> np.ndarray:
    """Which detections count: those not matched (IoU >= 0.5) to a `difficult` box, which counts neither way."""
    keep = np.ones(len(detected), bool)
    difficult = np.array([[b.x, b.y, b.w, b.h] for b in truth if b.kind == DIFFICULT], np.float64).reshape(-1, 4)
    if len(difficult) and len(detected):
        keep[[j for _, j in match_boxes(difficult, detected)]] = False
    return keep


def score_field(truth: list[Box], detected: np.ndarray, parasitized: np.ndarray) -> FieldScore:
    """Score detections (N x 4 boxes, and whether each was called Parasitized) against a field's annotation."""
    detected = np.asarray(detected, np.float64).reshape(-1, 4)
    parasitized = np.asarray(parasitized, bool).reshape(-1)
    if len(parasitized) != len(detected):
        raise ValueError(f"{len(detected)} detections but {len(parasitized)} labels")
    keep = not_on_difficult(truth, detected)
    detected, parasitized = detected[keep], parasitized[keep]
    cells = [b for b in truth if b.kind != DIFFICULT]
    boxes = np.array([[b.x, b.y, b.w, b.h] for b in cells], np.float64).reshape(-1, 4)
    infected = np.array([b.infected for b in cells], bool)
    iou = iou_matrix(boxes, detected)
    pairs = _pairs(iou, MATCH_IOU)
    healthy_pairs = [(i, j) for i, j in pairs if not infected[i]]
    found = int(np.sum(iou[infected][:, parasitized].max(axis=1) >= INFECTED_IOU)) if parasitized.any() else 0
    unboxed = int(np.sum(iou[infected].max(axis=1, initial=0.0) < INFECTED_IOU))
    off_boxes = int(np.sum(parasitized & (iou.max(axis=0, initial=0.0) < OFF_BOX_IOU)))
    return FieldScore(
        cells=len(cells), infected=int(infected.sum()), detections=len(detected), matched=len(pairs),
        infected_found=found, healthy_matched=len(healthy_pairs),
        healthy_called_parasitized=sum(bool(parasitized[j]) for _, j in healthy_pairs),
        called_parasitized=int(parasitized.sum()), infected_unboxed=unboxed, called_off_boxes=off_boxes,
    )


def review_scores(truth: list[Box], detected: np.ndarray, probability: np.ndarray, white: np.ndarray,
                  shows: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """What the review's sensitivity is measured on: `counting_scores` with every cell the review `shows` whatever its
    score (edge_app.review.REVIEW_SHOWS: an enlarged cell, edge_app.review.enlarged, and each box set apart as a white
    cell) scoring 1.

    An infected cell among those is found by the review, so the reviewed
    count is corrected only for the ones it is not shown.
    """
    from edge_app.review import enlarged

    detected = np.asarray(detected, np.float64).reshape(-1, 4)
    white = np.asarray(white, np.float64).reshape(-1, 4) if shows.get("white_cells") else np.zeros((0, 4))
    probability = np.asarray(probability, np.float64).reshape(-1)
    if shows.get("enlarged_area"):
        probability = np.where(enlarged(detected[:, 2] * detected[:, 3], shows["enlarged_area"]), 1.0, probability)
    return counting_scores(truth, np.vstack([detected, white]), np.r_[probability, np.ones(len(white))])


def pooled(scores: list[FieldScore]) -> FieldScore:
    """Sum of field scores: the figures of all fields taken as one slide."""
    return FieldScore(*(sum(getattr(s, f) for s in scores) for f in FieldScore.__dataclass_fields__))


@dataclass(frozen=True)
class CountedField:
    """One field as the pipeline counted it: each red cell's box and P(Parasitized), the seconds it took, the field
    check's warnings and the boxes set apart as white cells."""

    name: str
    boxes: np.ndarray
    probabilities: np.ndarray
    seconds: float
    warnings: tuple[str, ...] = ()
    white: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # boxes set apart as white cells


def count_fields(model: ModelBundle, detector: CellDetector | None, data: str | Path, names: list[str]) -> list[CountedField]:
    """Each field counted as `smear` counts it, with the field check's warnings against the detector's training fields:
    what the benchmarks score and the counting thresholds are measured on, so the two cannot count differently."""
    from edge_app.preprocess import load_rgb

    return [count_field(model, detector, name, load_rgb(Path(data) / "images" / name)) for name in names]


def count_field(model: ModelBundle, detector: CellDetector | None, name: str, rgb: np.ndarray) -> CountedField:
    """One field counted as `smear` counts it (see `count_fields`)."""
    from edge_app.field_check import check_field
    from edge_app.smear import classify_cells, find_field_cells

    start = time.perf_counter()
    found = find_field_cells(rgb, detector)
    results = classify_cells(model, found.red, 0.5)
    seconds = time.perf_counter() - start
    boxes = np.array([[r.cell.x, r.cell.y, r.cell.width, r.cell.height] for r in results]).reshape(-1, 4)
    white = np.array([[c.x, c.y, c.width, c.height] for c in found.white]).reshape(-1, 4)
    warned = tuple(check_field(rgb, found.red, detector)[1])
    return CountedField(name, boxes, np.array([r.probability for r in results]), seconds, warned, white)


def export_cells(data: str | Path, names: list[str], out: str | Path,
                 stain: tuple[list[float], int, str] | None = None) -> dict[str, int]:
    """Cut every annotated cell of these fields out as the app cuts out a detected one, into an NIH-style folder.

    `out/Parasitized/` and `out/Uninfected/` get one lossless PNG per
    infected or healthy box (difficult boxes are left out), named after the
    field, so the classifier can be trained on the fields' cells through the
    same preprocessing as the NIH cells (`malaria-train fit --extra-cells`).
    With `stain` (a classifier's reference colour, input size and fit), each
    field's cells get the per-channel gains the app would give them
    (edge_app.stain, measured on the cells as the model sees them), so the
    classifier learns from cells stained as it will see them.
    """
    from PIL import Image

    from edge_app.labels import LABELS
    from edge_app.preprocess import fit_square, load_rgb
    from edge_app.smear import cells_in_boxes
    from edge_app.stain import apply_gains, stain_gains

    annotations = load_annotations(Path(data) / "annotations.json")
    counts = {label: 0 for label in LABELS}
    for label in LABELS:
        (Path(out) / label).mkdir(parents=True, exist_ok=True)
    for name in names:
        boxes = [b for b in annotations[name] if b.kind != DIFFICULT]
        cells = cells_in_boxes(load_rgb(Path(data) / "images" / name), [(b.x, b.y, b.w, b.h) for b in boxes])
        if len(cells) != len(boxes):
            raise ValueError(f"{name}: a box lies outside the image")
        gains = np.ones(3, np.float32)
        if stain is not None and cells:
            reference, size, fit = stain
            gains = stain_gains(np.stack([fit_square(c.crop, size, fit) for c in cells]), reference)
        for i, (b, cell) in enumerate(zip(boxes, cells)):
            label = LABELS[1] if b.infected else LABELS[0]
            Image.fromarray(apply_gains(cell.crop, gains)).save(Path(out) / label / f"{Path(name).stem}_cell{i:03d}_{b.kind.replace(' ', '-')}.png")
            counts[label] += 1
    return counts


def counting_scores(truth: list[Box], detected: np.ndarray, probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the counting threshold is tuned on: the P(Parasitized) of every detection that is not an infected cell,
    and for every infected box the highest P of a detection overlapping it (0 when none does: a missed cell).

    These are the rates the counted parasitemia needs corrected: a false
    positive is any detection called Parasitized that is not an infected cell
    (a healthy cell, or something else the detector found), a true positive
    an infected cell that a Parasitized call overlaps (IoU >= 0.3).
    """
    detected = np.asarray(detected, np.float64).reshape(-1, 4)
    probability = np.asarray(probability, np.float64).reshape(-1)
    keep = not_on_difficult(truth, detected)
    infected = np.array([[b.x, b.y, b.w, b.h] for b in truth if b.infected], np.float64).reshape(-1, 4)
    overlap = iou_matrix(infected, detected) >= INFECTED_IOU
    on_infected = overlap.any(axis=0)
    best = np.where(overlap, probability[None, :], 0.0).max(axis=1) if len(detected) else np.zeros(len(infected))
    return probability[keep & ~on_infected], best
