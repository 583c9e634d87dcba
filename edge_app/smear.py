"""Find the red cells in a thin-smear field image and classify each one.

`find_field_cells` boxes the cells with the learned detector (edge_app.detect)
and cuts each out of its box (`cells_in_boxes`), or, without a detector, uses
the classical segmentation below; cells under a scale bar or text are
dropped, and white cells (edge_app.white_cells) set apart from the red ones.

Classical segmentation (OpenCV): stained cells absorb green light, so after
evening out the lighting an Otsu threshold on the green channel separates
them from the bright background;
holes (the pale centre of a red cell) are filled; touching cells are cut
apart between the peaks of the distance transform (`split_touching`). Cells
cut by the image border, debris and unsplit clumps are dropped by size
relative to the field's median cell, so no magnification has to be
configured. Each kept cell is cropped the way the
training images were made, the cell on a black background, and goes through
the same preprocessing function as any cell image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_app.classify import label_for
from edge_app.detect import CellDetector
from edge_app.model import VIEWS, ModelBundle
from edge_app.preprocess import fit_square
from edge_app.stain import match_stain
from edge_app.white_cells import white_cells

#: Cells smaller than this fraction of the field's median cell area are debris
#: (platelets, stain precipitate); larger than MAX are clumps that could not be split.
MIN_AREA_RATIO = 0.3
MAX_AREA_RATIO = 2.2
#: Below this many pixels nothing is a red cell at any usable magnification.
MIN_CELL_AREA = 80
#: Otsu's two classes must differ by at least this share of the brighter one's green, or the field is blank. A share,
#: not a number of grey levels: a faint stain under a dim lamp (another laboratory's fields: 16 levels, 12 %) is
#: as much a field as a vivid one under a bright lamp (50-90 levels, 25-45 %).
MIN_CONTRAST = 0.08
CROP_MARGIN = 2
#: Scale bars and burnt-in text are drawn near black, or in a saturated colour; Giemsa stain is neither. Its darkest,
#: a white cell's nucleus, keeps one channel above 90; and stain absorbs green most, so no stained pixel, nor a
#: tinted background, is far greener than it is red and blue. A box with more than INK_SHARE of such pixels is an
#: overlay, or a cell hidden under one: neither can be counted. Green is judged against the field's own typical
#: pixel, since a green-tinted lamp makes the whole field greener (the training fields' by 15-50 levels).
INK_LEVEL = 60
OVERLAY_GREEN = 80
INK_SHARE = 0.01
#: Every field cell is classified as seen and mirrored (ModelBundle.predict's first two VIEWS)...
SEEN_VIEWS = 2
#: ...and, where those two give P(Parasitized) at least this, in all 8 orientations. Field cells' scores from two
#: views are noisy where the review and counting thresholds lie; the 8-view mean ranks infected cells better (on the
#: annotated fields' cells, by their fold detectors, the share of infected cells called Parasitized at 1 % false
#: positives rose from 0.72 to 0.76, models/DETAILS.md). 70 % of the cells score under 0.1 from two views; of those
#: 9,700, 7 reached 0.3 with eight and none 0.44 (the review thresholds measured lie at 0.33-0.39, the counting ones
#: higher), so they are left at two views: about 1.9 times the inferences of two views for all, not 4.
RESCORE_FLOOR = 0.1


@dataclass(frozen=True)
class Cell:
    """One segmented cell: its bounding box in the field, area in pixels, and its pixels on black."""

    x: int
    y: int
    width: int
    height: int
    area: int
    crop: np.ndarray  # (height + margins, width + margins, 3) uint8, background black


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    probability: float
    label: str


def flatten_illumination(gray: np.ndarray) -> np.ndarray:
    """Divide out uneven lighting (a microscope's vignetting), so one threshold fits the whole field.

    The local background level is the brightest value within a window much
    larger than a cell (cells absorb, the background does not), computed on
    an eighth-size copy and smoothed: a few milliseconds for a whole field.
    """
    h, w = gray.shape
    small = cv2.resize(gray, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
    k = max(3, (min(small.shape) // 6) | 1)
    background = cv2.dilate(small, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    background = cv2.resize(cv2.GaussianBlur(background, (0, 0), k / 2), (w, h), interpolation=cv2.INTER_LINEAR)
    gain = np.float32(np.median(background)) / np.maximum(background, 1).astype(np.float32)
    return np.clip(gray * gain, 0, 255).astype(np.uint8)


def foreground_mask(rgb: np.ndarray, min_contrast: float = MIN_CONTRAST) -> np.ndarray:
    """uint8 mask (255 = cell) of stained material, holes filled; all zero for a blank field (see MIN_CONTRAST)."""
    green = cv2.GaussianBlur(flatten_illumination(np.ascontiguousarray(rgb[..., 1])), (5, 5), 0)
    _, mask = cv2.threshold(green, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    dark, bright = green[mask > 0], green[mask == 0]
    if not dark.size or not bright.size or float(bright.mean()) - float(dark.mean()) < min_contrast * float(bright.mean()):
        return np.zeros_like(mask)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 255, thickness=cv2.FILLED)
    return filled


def split_touching(mask: np.ndarray) -> np.ndarray:
    """uint8 mask like `mask` with a background line cut between touching cells.

    Cell centres are the local maxima of the distance transform, at least
    about a cell radius apart; every foreground pixel goes to its nearest
    centre (OpenCV's labelled distance transform), and a cut is drawn where
    neighbouring pixels belong to different centres.
    """
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask
    # A typical cell radius, from the median blob area: single cells dominate a thin smear.
    radius = float(np.sqrt(np.median(stats[1:, cv2.CC_STAT_AREA]) / np.pi))
    if radius < 2:
        return mask
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    k = max(3, int(radius) | 1)
    peaks = (dist >= cv2.dilate(dist, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))) & (dist >= 0.5 * radius)
    _, nearest = cv2.distanceTransformWithLabels((~peaks).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_CCOMP)
    cut = np.zeros(mask.shape, bool)
    cut[:, 1:] |= nearest[:, 1:] != nearest[:, :-1]
    cut[1:, :] |= nearest[1:, :] != nearest[:-1, :]
    return np.where(cut, 0, mask).astype(np.uint8)


def segment_cells(rgb: np.ndarray) -> list[Cell]:
    """Whole, single red cells in a field, in reading order (top to bottom, left to right)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image, got shape {rgb.shape} dtype {rgb.dtype}")
    n, labels, stats, _ = cv2.connectedComponentsWithStats(split_touching(foreground_mask(rgb)), connectivity=4)
    if n <= 1:
        return []
    h, w = labels.shape
    x, y, bw, bh, area = (stats[1:, i] for i in range(5))
    on_border = (x == 0) | (y == 0) | (x + bw >= w) | (y + bh >= h)
    candidates = ~on_border & (area >= MIN_CELL_AREA)
    if not candidates.any():
        return []
    typical = float(np.median(area[candidates]))
    keep = candidates & (area >= MIN_AREA_RATIO * typical) & (area <= MAX_AREA_RATIO * typical)
    cells = []
    for i in np.flatnonzero(keep):
        x0, y0 = max(0, x[i] - CROP_MARGIN), max(0, y[i] - CROP_MARGIN)
        x1, y1 = min(w, x[i] + bw[i] + CROP_MARGIN), min(h, y[i] + bh[i] + CROP_MARGIN)
        inside = labels[y0:y1, x0:x1] == i + 1
        crop = np.where(inside[..., None], rgb[y0:y1, x0:x1], 0).astype(np.uint8)
        cells.append(Cell(int(x[i]), int(y[i]), int(bw[i]), int(bh[i]), int(area[i]), crop))
    cells.sort(key=lambda c: (c.y + c.height // 2, c.x))
    return cells


def cells_in_boxes(rgb: np.ndarray, boxes: list[tuple[int, int, int, int]], mask: np.ndarray | None = None) -> list[Cell]:
    """Each box's cell on black, as the classifier's training cells were cut out.

    A box holds its cell and corners of its neighbours; the cell is the
    stained foreground (`foreground_mask`, computed once per field when not
    given) inside the ellipse inscribed in the box. The boxes already say
    the field holds cells, so however faint the stain, its foreground is
    never taken for a blank field's (which would cut every cell out as
    black).
    """
    if mask is None:
        mask = foreground_mask(rgb, min_contrast=0.0)
    h, w = mask.shape
    cells = []
    for x, y, bw, bh in boxes:
        x0, y0 = max(0, int(x) - CROP_MARGIN), max(0, int(y) - CROP_MARGIN)
        x1, y1 = min(w, int(x) + int(bw) + CROP_MARGIN), min(h, int(y) + int(bh) + CROP_MARGIN)
        if x1 <= x0 or y1 <= y0:
            continue
        ellipse = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.ellipse(ellipse, ((x + bw / 2 - x0, y + bh / 2 - y0), (float(bw), float(bh)), 0.0), 255, thickness=cv2.FILLED)
        inside = (ellipse > 0) & (mask[y0:y1, x0:x1] > 0)
        crop = np.where(inside[..., None], rgb[y0:y1, x0:x1], 0).astype(np.uint8)
        cells.append(Cell(int(x), int(y), int(bw), int(bh), int(inside.sum()), crop))
    return cells


def classify_cells(model: ModelBundle, cells: list[Cell], threshold: float | None = None, batch_size: int = 64) -> list[CellResult]:
    """P(Parasitized) and a label for each of one field's cells, resized by the same fit_square that preprocess uses.

    The field's stain is first matched to the model's training cells
    (edge_app.stain) when its sidecar records their colour: pass the cells
    of one field at a time, since the match is measured on them. Each cell
    is classified as seen and mirrored, and a cell that could matter (P at
    least RESCORE_FLOOR) in all 8 of its orientations (ModelBundle.predict),
    which the counting threshold and error rates are measured with
    (quantization.counting).
    """
    cut = model.threshold if threshold is None else threshold
    if not cells:
        return []
    pixels = np.stack([fit_square(c.crop, model.input.size, model.fit) for c in cells])
    if model.cell_colour is not None:
        pixels = match_stain(pixels, model.cell_colour)
    z = np.concatenate([model.mean_logit(pixels[s:s + batch_size], range(SEEN_VIEWS)) for s in range(0, len(cells), batch_size)])
    likely = np.flatnonzero(model.probability(z) >= RESCORE_FLOOR)
    for s in range(0, len(likely), batch_size):  # the field's likely cells together: fewer batch sizes to set up
        i = likely[s:s + batch_size]
        more = model.mean_logit(pixels[i], range(SEEN_VIEWS, len(VIEWS)))
        z[i] = (SEEN_VIEWS * z[i] + (len(VIEWS) - SEEN_VIEWS) * more) / len(VIEWS)
    return [CellResult(c, float(p), label_for(float(p), cut)) for c, p in zip(cells, model.probability(z))]


@dataclass(frozen=True)
class FieldCells:
    """What a field's boxes hold: its red cells, to count, and the white cells found among them, left out."""

    red: list[Cell]
    white: list[Cell]


def overlay_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of a scale bar or burnt-in text (see INK_LEVEL): near black, or far greener than red and blue, and than
    the field's typical pixel."""
    r, g, b = cv2.split(np.ascontiguousarray(rgb))
    red_blue = cv2.max(r, b)
    green_lead = cv2.subtract(g, red_blue)  # saturates at 0: only how much greener, never how much less green
    typical = float(np.median(green_lead[::8, ::8]))
    return (cv2.max(g, red_blue) < INK_LEVEL) | (green_lead > min(typical + OVERLAY_GREEN, 255))


def find_field_cells(rgb: np.ndarray, detector: CellDetector | None = None) -> FieldCells:
    """A field's cells: boxed by the learned detector when there is one, else segmented classically.

    Cells under a scale bar or text overlay (`overlay_mask`) are dropped;
    white cells (`edge_app.white_cells`) are set apart, so that a slide can
    show the microscopist what was left out of the count.
    """
    if detector is None:
        cells = segment_cells(rgb)
    else:
        cells = cells_in_boxes(rgb, [(d.x, d.y, d.width, d.height) for d in detector.detect(rgb)])
    ink = overlay_mask(rgb)
    if ink.any():
        cells = [c for c in cells if ink[c.y:c.y + c.height, c.x:c.x + c.width].mean() < INK_SHARE]
    white = white_cells(rgb, [(c.x, c.y, c.width, c.height) for c in cells])
    return FieldCells([c for c, w in zip(cells, white) if not w], [c for c, w in zip(cells, white) if w])


def find_cells(rgb: np.ndarray, detector: CellDetector | None = None) -> list[Cell]:
    """The red cells of a field, the ones counted (`find_field_cells` without its white cells)."""
    return find_field_cells(rgb, detector).red


def analyse_field(model: ModelBundle, rgb: np.ndarray, threshold: float | None = None,
                  detector: CellDetector | None = None) -> list[CellResult]:
    """Find and classify the red cells of one field image."""
    return classify_cells(model, find_cells(rgb, detector), threshold)
