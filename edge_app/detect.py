"""Find red cells in a field with a small learned detector (a TFLite bundle), the way a microscopist boxes them.

The detector is a CenterNet-style network: for every cell of a coarse grid
over the field it predicts how likely a red cell's centre is there, the
cell's width and height, and the centre's sub-cell offset. It was trained on
hand-boxed real thin-smear fields, where white cells, platelets and stain
debris are not boxed, so it learns to leave them out, and it boxes touching
and overlapping cells one by one, which a threshold-and-split pipeline
cannot. Everything here is numpy and OpenCV around the interpreter: one
call for a field at the magnification the detector was trained for, a few
more (on tiles) when its cells come out far larger or smaller
(`CellDetector.detect`). `field_input` is the single definition of the
detector's input pixels at the default scale: the training code imports it
too, and the tiles are cut from the same `input_image`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_app.box_filter import FLOOR, BoxFilter, at_border, intersections
from edge_app.model import ModelError, quantize_input, read_sidecar, shipped_path
from edge_app.runtime import Runtime, RuntimeMissing, find_runtime

KIND = "cell-detector"
#: Output grid cells per input pixel side.
STRIDE = 4
DEFAULT_DETECTOR_NAME = "cell-detector-int8.tflite"


def default_detector_path() -> Path:
    """The shipped cell detector ($MALARIA_EDGE_DETECTOR overrides it)."""
    return shipped_path(DEFAULT_DETECTOR_NAME, "MALARIA_EDGE_DETECTOR")


@dataclass(frozen=True)
class Detection:
    """A red cell's box in field pixels and the detector's confidence that it is one."""

    x: int
    y: int
    width: int
    height: int
    score: float


#: How a detector sees colour: "rgb" as captured, or "od", stain optical density per channel scaled by the
#: field's own median cell density (see `optical_density`), the same for any stain strength, lamp or white balance.
STAIN_INPUTS = ("rgb", "od")
#: A field's median cell density maps to this pixel value in "od" input.
OD_CELL_LEVEL = 80.0


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """A field as stain optical density, each channel divided by the field's median cell density (uint8, cells ~80).

    Light through a stained cell falls as exp(-density): dividing by the
    background (the brightest few percent of the field, per channel) and
    taking -log removes the lamp's colour and brightness, and dividing by the
    median density of the cells' pixels removes how strongly the slide took
    the stain, so a greyish and a vivid smear look alike; parasites, white
    cells and platelets stay darker than red cells in every field.
    """
    x = rgb.astype(np.float32) + 1.0
    background = np.percentile(x.reshape(-1, 3), 97, axis=0)
    od = np.maximum(np.log(background / x), 0.0)
    total = od.sum(axis=2)
    level = np.percentile(total, 40)  # below: background and cell edges; thin films are at least half cells
    cells = od[total > max(level, 1e-3)]
    ref = np.median(cells, axis=0) if len(cells) else np.ones(3, np.float32)
    return np.clip(od / np.maximum(ref, 1e-3) * OD_CELL_LEVEL, 0, 255).astype(np.uint8)


def field_input(rgb: np.ndarray, height: int, width: int, scale: float, stain: str = "rgb") -> tuple[np.ndarray, float]:
    """The detector's (height, width, 3) uint8 input for a field, and the factor from field to input pixels.

    The field is resized by `scale` (the detector's pixels per field pixel at
    the magnification it was trained for, 0.25 for a 1280x960 field with
    80 px cells), never stretched, turned into optical density when `stain`
    is "od", and padded at the right and bottom with the background (the
    field's median colour for "rgb", the colour of the gaps between cells;
    zero density for "od"); a field too large for the input after that
    resize is shrunk further to fit.
    """
    h, w = _check_rgb(rgb)
    s = min(scale, height / h, width / w)
    return pad_input(input_image(rgb, s, stain), height, width, stain), s


def _check_rgb(rgb: np.ndarray) -> tuple[int, int]:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image, got shape {rgb.shape} dtype {rgb.dtype}")
    return rgb.shape[0], rgb.shape[1]


def input_image(rgb: np.ndarray, s: float, stain: str = "rgb") -> np.ndarray:
    """A field as the detector sees it, any size: resized by s, in optical density when `stain` is "od"."""
    small = resize_field(rgb, s)
    return optical_density(small) if stain == "od" else small


def pad_input(image: np.ndarray, height: int, width: int, stain: str = "rgb", fill: np.ndarray | None = None) -> np.ndarray:
    """(Part of) `input_image` in the detector's (height, width, 3) input, cut or padded at the right and bottom with
    the background: `fill`, else the image's median colour ("rgb"), or zero density ("od")."""
    nh, nw = min(height, image.shape[0]), min(width, image.shape[1])
    out = np.empty((height, width, 3), np.uint8)
    out[:] = 0 if stain == "od" else (background_colour(image) if fill is None else fill)
    out[:nh, :nw] = image[:nh, :nw]
    return out


def resize_field(rgb: np.ndarray, s: float) -> np.ndarray:
    """A field resized by factor s: area averaging when shrinking (no aliasing of the stain's fine detail)."""
    h, w = rgb.shape[:2]
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """The field's median colour (the gaps between cells in a thin film): what padding is filled with."""
    return np.median(rgb.reshape(-1, 3), axis=0).astype(np.uint8)


#: Boxes overlapping a stronger one by more than this are the same cell found twice.
NMS_IOU = 0.6


def decode(heat: np.ndarray, box: np.ndarray, threshold: float, scale: float, field_shape: tuple[int, int],
           nms_iou: float = NMS_IOU) -> list[Detection]:
    """Detections from the network's outputs: heat (H, W) in 0..1 and box (H, W, 4) = width, height, dx, dy in grid units.

    A centre is a grid cell at or above `threshold` that is the maximum of its
    3x3 neighbourhood (the middle one of a plateau of equal maxima); boxes
    overlapping a stronger one by more than `nms_iou` are the same cell found
    twice. Boxes are clipped to the field.
    """
    peaks = (heat >= threshold) & (heat >= cv2.dilate(heat.astype(np.float32), np.ones((3, 3), np.uint8)))
    # Neighbouring maxima are equal (int8 outputs make such plateaus common): one centre per plateau, its middle.
    n, labels, _, centroids = cv2.connectedComponentsWithStats(peaks.astype(np.uint8), connectivity=8)
    if n <= 1:
        return []
    ys, xs = np.nonzero(peaks)
    own = labels[ys, xs]
    gap = (xs - centroids[own, 0]) ** 2 + (ys - centroids[own, 1]) ** 2
    order = np.lexsort((gap, own))
    first = order[np.r_[True, own[order][1:] != own[order][:-1]]]
    ys, xs = ys[first], xs[first]
    b = box[ys, xs].astype(np.float64)
    cx, cy = (xs + 0.5 + b[:, 2]) * STRIDE / scale, (ys + 0.5 + b[:, 3]) * STRIDE / scale
    bw, bh = np.maximum(b[:, 0], 0.1) * STRIDE / scale, np.maximum(b[:, 1], 0.1) * STRIDE / scale
    rects = _clipped(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, field_shape)
    return _suppressed(rects, heat[ys, xs].astype(np.float64), threshold, nms_iou)


def _clipped(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, field_shape: tuple[int, int]) -> list[list[float]]:
    """Boxes given by their corners, clipped to the field, as (x, y, width, height)."""
    fh, fw = field_shape
    x0, y0 = np.clip(x0, 0, fw - 1), np.clip(y0, 0, fh - 1)
    x1, y1 = np.clip(x1, 1, fw), np.clip(y1, 1, fh)
    return [[float(a), float(c), float(e - a), float(f - c)] for a, c, e, f in zip(x0, y0, x1, y1)]


def _suppressed(rects: list[list[float]], scores: np.ndarray, threshold: float, nms_iou: float) -> list[Detection]:
    """The boxes (x, y, width, height) scoring above `threshold` that are left, in their order, once each overlapping a
    stronger one by more than `nms_iou` is dropped."""
    keep = cv2.dnn.NMSBoxes(rects, np.asarray(scores, np.float64).tolist(), float(threshold), float(nms_iou))
    return [Detection(int(round(rects[i][0])), int(round(rects[i][1])), max(1, int(round(rects[i][2]))),
                      max(1, int(round(rects[i][3]))), float(scores[i])) for i in sorted(np.asarray(keep, int).reshape(-1).tolist())]


def _confident(found: list[Detection], threshold: float) -> int:
    return sum(d.score >= threshold for d in found)


def _tile_step(tile: int) -> int:
    """How far apart tiles of `tile` pixels start: TILE_OVERLAP less than a tile, at most half of one."""
    return max(tile - TILE_OVERLAP, tile // 2)


def _tile_origins(size: int, tile: int) -> list[int]:
    """Where tiles of `tile` pixels start along a side of `size`, overlapping by at least `tile - _tile_step(tile)`,
    the last one flush with the end."""
    origins = list(range(0, max(size - tile, 0) + 1, _tile_step(tile)))
    return origins + [size - tile] if origins[-1] + tile < size else origins


#: The threshold is tuned for the best match over all of a field's boxes, and the infected cells the detector misses
#: are mostly the enlarged ones (P. vivax schizonts and gametocytes, 105-115 px across against 80) scoring just under
#: it. Lowering it for every box adds smudges and debris that raise the counting threshold; a box at least
#: LARGE_CELL_AREA times the field's median confident box is kept down to LARGE_CELL_MARGIN below it
#: (models/DETAILS.md, "Large cells").
LARGE_CELL_MARGIN = 0.1
LARGE_CELL_AREA = 1.3
#: On a stain, camera or focus unlike its training fields the detector grows unsure of whole fields of plain red cells:
#: their scores sink under the threshold together, while the field's confident boxes still say how large a cell is. A
#: box down to ALONE_MARGIN below the threshold is kept when it is of a cell's size for this field (ALONE_AREA times
#: its median confident box), lies whole inside the field (a cell cut by the edge is where the detector is unsure
#: anyway), and covers a place no kept box covers (at most ALONE_OVERLAP of the smaller box's area shared): a cell
#: the detector was unsure of, not a second box on a cell already counted (models/DETAILS.md, "Another laboratory").
ALONE_MARGIN = 0.2
ALONE_AREA = (0.8, 1.6)
ALONE_OVERLAP = 0.4


def kept_cells(found: list[Detection], threshold: float, field_shape: tuple[int, int],
               others: list[Detection] = ()) -> list[Detection]:
    """The detections at or above `threshold`, those below it that are large for this field (see LARGE_CELL_AREA),
    and those below it that are cells alone where nothing else was kept (see ALONE_MARGIN), among `found` and the
    `others` another pass over the field found (see NEIGHBOUR_SCALES).

    The field's own confident boxes set the size, so no magnification has to
    be known; a field with none has nothing to compare with and keeps none.
    """
    confident = [d for d in found if d.score >= threshold]
    if not confident:
        return []
    median = float(np.median([d.width * d.height for d in confident]))
    kept = [d for d in found if d.score >= threshold or
            (d.width * d.height >= LARGE_CELL_AREA * median and d.score >= threshold - LARGE_CELL_MARGIN)]
    taken = set(kept)
    alone = [d for d in [*found, *others] if d not in taken and d.score >= threshold - ALONE_MARGIN
             and ALONE_AREA[0] * median <= d.width * d.height <= ALONE_AREA[1] * median
             and not at_border(np.array([d.x, d.y, d.width, d.height]), field_shape)[0]]
    boxes = np.array([[d.x, d.y, d.width, d.height] for d in kept], np.float64).reshape(-1, 4)
    for d in sorted(alone, key=lambda d: -d.score):
        box = np.array([[d.x, d.y, d.width, d.height]], np.float64)
        shared = intersections(box, boxes)[0] / np.minimum(d.width * d.height, boxes[:, 2] * boxes[:, 3])
        if not (shared > ALONE_OVERLAP).any():
            kept.append(d)
            boxes = np.vstack([boxes, box])
    return kept


#: Cells are found best at the size the detector was trained on (its sidecar's `field_ranges.cell_size`, in input
#: pixels); it was trained at 0.7-1.4x that, and its boxes saturate outside (about 14 and 32 px for 20 px cells). A
#: field whose cells' median box, at the default scale, is under CELL_SIZE_LOW times the smallest training size or
#: over CELL_SIZE_HIGH times the largest (a lower or higher magnification, another camera) is detected again at the
#: scale that brings them to the middle of that range, up to MAX_PASSES passes (models/DETAILS.md, "Magnification").
CELL_SIZE_LOW = 0.8
CELL_SIZE_HIGH = 1.1
#: Once rescaled, a field is rescaled again until its cells' median box is within this share of that middle.
CELL_SIZE_SETTLE = 0.1
MAX_PASSES = 4
#: A field is never rescaled by more than this factor either way from its default scale: beyond a third or three
#: times the training magnification the detector does not find the cells anyway (models/DETAILS.md), and the tiles
#: of a field enlarged further would cost seconds on a Pi for nothing.
MAX_RESCALE = 3.0
#: A first pass may have seen the field at a scale where the detector cannot find its cells, or finds only some: cells
#: under about 14 or over about 32 px give it nothing to measure magnification by, and small ones just inside its range
#: get boxed two at a time. When it finds fewer than SEARCH_BELOW confident cells, the field is detected at each of
#: SEARCH_FACTORS times the default scale; when their median box is more than SEARCH_DOUBT under the training fields'
#: smallest cell size, yet not far enough for the boxes to be rescaled to (CELL_SIZE_LOW; the training fields' unseen
#: runs lie within 10 %, the other laboratory's fields 15-20 % under), at the larger scales; when it is more than
#: SEARCH_DOUBT over the largest (a higher magnification), at the smaller ones. The scale that finds the most confident
#: cells of a size it was trained on (SEARCH_SIZES times its training fields' cell sizes, the magnifications it was
#: trained at), if at least SEARCH_BELOW and SEARCH_GAIN times the first pass's, is followed from there
#: (models/DETAILS.md, "Another laboratory"). A field of a few cells at the right scale keeps its first pass: at
#: another scale a few more boxes, or boxes on parts of cells, are no evidence.
SEARCH_BELOW = 10
SEARCH_GAIN = 1.5
SEARCH_DOUBT = 0.1
SEARCH_FACTORS = (2.0, 0.5, 1.5, 0.7, 3.0, 1 / 3)
SEARCH_SIZES = (0.7, 1.4)
#: A field rescaled to another magnification is where the detector is least sure of its cells, and a cell it misses
#: at the scale its boxes chose it often finds at a slightly smaller one. Such a field is detected again at
#: NEIGHBOUR_SCALES times that scale, and their boxes may add cells alone (`kept_cells`), never replace a box. Only
#: where the field fits one pass: smaller scales never need more, and a field enlarged into tiles (a lower
#: magnification, whose cells the detector already finds) would cost seconds more on a Pi (models/DETAILS.md,
#: "Another laboratory").
NEIGHBOUR_SCALES = (0.9, 0.8)
#: Overlap of neighbouring tiles, in input pixels, when a field at the cells' scale is larger than the input: about
#: three cells, so every cell lies whole in the inner part of some tile.
TILE_OVERLAP = 64


class CellDetector:
    """A verified cell-detector bundle (.tflite + sidecar of kind "cell-detector") ready to find cells in fields."""

    def __init__(self, tflite: str | Path, threads: int = 1, runtime: Runtime | None = None):
        self.path = Path(tflite)
        self.meta = read_sidecar(self.path, "pass --detector, or set MALARIA_EDGE_DETECTOR")
        try:
            if self.meta.get("kind") != KIND:
                raise ValueError(f"kind {self.meta.get('kind')!r}, expected {KIND!r}")
            self.height, self.width = (int(v) for v in self.meta["input"]["shape"][:2])
            self.scale = float(self.meta["input"]["scale"])
            self.threshold = float(self.meta["threshold"])
            self.stain = str(self.meta["input"].get("stain", "rgb"))
            if self.stain not in STAIN_INPUTS:
                raise ValueError(f"stain input {self.stain!r} (this app knows {', '.join(STAIN_INPUTS)})")
            if not (0 < self.scale <= 4 and 0 < self.threshold < 1 and self.height % STRIDE == 0 and self.width % STRIDE == 0):
                raise ValueError("scale, threshold or input shape out of range")
            self.box_filter = BoxFilter.from_meta(self.meta["box_filter"]) if "box_filter" in self.meta else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{self.path}: not a usable cell-detector sidecar ({exc})") from None
        try:
            self.runtime = runtime or find_runtime()
            self._interp = self.runtime.interpreter(str(self.path), threads)
        except RuntimeMissing as exc:
            raise ModelError(str(exc)) from None
        except Exception as exc:  # the runtimes raise ValueError/RuntimeError with long texts
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path}: not a usable TFLite model ({first})") from None
        self._in = self._interp.get_input_details()[0]
        outs = {int(d["shape"][-1]): d for d in self._interp.get_output_details()}
        grid = [1, self.height // STRIDE, self.width // STRIDE]
        if list(self._in["shape"]) != [1, self.height, self.width, 3] or sorted(outs) != [1, 4] \
                or any(list(d["shape"][:3]) != grid for d in outs.values()):
            raise ModelError(f"{self.path}: tensor shapes do not match its sidecar's input {self.height}x{self.width}: "
                             "wrong sidecar for this model")
        self._heat, self._box = outs[1], outs[4]

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.stem))

    def _output(self, detail: dict) -> np.ndarray:
        raw = self._interp.get_tensor(detail["index"])[0]
        scale, zero = detail["quantization"]
        return (raw.astype(np.float32) - zero) * scale if scale else raw.astype(np.float32)

    def _run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._interp.set_tensor(self._in["index"], quantize_input(pixels[None], self._in))
        self._interp.invoke()
        return self._output(self._heat)[..., 0], self._output(self._box)

    def raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The network's heat map and boxes for a field at its default scale, and the field-to-input scale."""
        pixels, scale = field_input(rgb, self.height, self.width, self.scale, self.stain)
        return (*self._run(pixels), scale)

    @property
    def cell_sizes(self) -> tuple[float, float] | None:
        """The smallest and largest median cell box side (input pixels) of the fields it was trained on, if recorded."""
        sizes = self.meta.get("field_ranges", {}).get("cell_size")
        return (float(sizes["min"]), float(sizes["max"])) if sizes else None

    def detect(self, rgb: np.ndarray, threshold: float | None = None, passes: int = MAX_PASSES) -> list[Detection]:
        """The red cells in a field, in reading order: the candidates its box filter counts (`edge_app.box_filter`), or,
        for a sidecar without one, those at or above the threshold and, a little below it, large ones and cells alone
        (`kept_cells`), a field rescaled to another magnification also at neighbouring scales (NEIGHBOUR_SCALES)."""
        threshold = self.threshold if threshold is None else threshold
        found, s, default = self._scaled_candidates(rgb, threshold, passes, None)
        if self.box_filter:
            kept = self.box_filter.keep(found, threshold, rgb.shape[:2])
        else:
            kept = kept_cells(found, threshold, rgb.shape[:2], self._neighbours(rgb, s, default, threshold))
        return sorted(kept, key=lambda d: (d.y + d.height // 2, d.x))

    def candidates(self, rgb: np.ndarray, threshold: float | None = None, passes: int = MAX_PASSES,
                   floor: float | None = None) -> list[Detection]:
        """Every box down to `floor`: by default what `detect` chooses from, down to the box filter's floor, or
        ALONE_MARGIN below the threshold for a sidecar without one.

        When the cells come out far smaller or larger than those the detector
        was trained on (see CELL_SIZE_LOW), the field is detected again at
        the scale their boxes say, in tiles where it is then larger than the
        input: the detector's own boxes measure the magnification, so none
        has to be configured. `passes=1` detects at the default scale only.
        """
        return self._scaled_candidates(rgb, threshold, passes, floor)[0]

    def _scaled_candidates(self, rgb: np.ndarray, threshold: float | None, passes: int,
                           floor: float | None) -> tuple[list[Detection], float, float]:
        """`candidates`, the scale they were found at and the default scale."""
        threshold = self.threshold if threshold is None else threshold
        if floor is None:
            floor = FLOOR if self.box_filter else threshold - max(LARGE_CELL_MARGIN, ALONE_MARGIN)
        low = max(floor, 0.01)
        heat, box, default = self.raw(rgb)
        found, s = decode(heat, box, low, default, rgb.shape[:2]), default
        factors = self._search_factors(found, default, threshold) if passes > 1 else ()
        if factors:
            found, s = self._searched(rgb, found, default, low, threshold, factors)
        for rescaled in range(passes - 1):
            wanted = self._cells_scale(found, s, threshold, settle=rescaled > 0)
            capped = None if wanted is None else min(max(wanted, default / MAX_RESCALE), default * MAX_RESCALE)
            if capped is None or capped == s:
                break
            s = capped
            again = self._found_at(rgb, s, low)
            if not any(d.score >= threshold for d in again):
                break  # rescaled to where nothing is found: keep what the pass before found
            found = again
        return found, s, default

    def _neighbours(self, rgb: np.ndarray, s: float, default: float, threshold: float) -> list[Detection]:
        """The boxes a field rescaled to `s` gets at NEIGHBOUR_SCALES times it, down to ALONE_MARGIN under the
        threshold; none for a field at its default scale, or one too large for a single pass at `s`."""
        if s == default or round(rgb.shape[0] * s) > self.height or round(rgb.shape[1] * s) > self.width:
            return []
        return [d for f in NEIGHBOUR_SCALES for d in self._found_at(rgb, s * f, max(threshold - ALONE_MARGIN, 0.01))]

    def _search_factors(self, found: list[Detection], s: float, threshold: float) -> tuple[float, ...]:
        """The factors of scale `s` worth trying when a first pass there may have missed the field's cells (see
        SEARCH_BELOW); none when it found them at a size the detector knows."""
        if not self.cell_sizes:
            return ()
        sides = [max(d.width, d.height) for d in found if d.score >= threshold]
        if len(sides) < SEARCH_BELOW:
            return SEARCH_FACTORS
        lo, hi = self.cell_sizes
        side = s * float(np.median(sides))
        # Far under the training sizes the boxes measure the magnification and the field is rescaled to it
        # (`_cells_scale`); just under them they may be boxes on two cells at a time, which no rescaling would question.
        # Over them the boxes saturate (about 32 px), so they understate how far to shrink: the smaller scales are
        # searched too, cheaply (a shrunk field needs no tiles).
        if CELL_SIZE_LOW * lo <= side < lo * (1 - SEARCH_DOUBT):
            return tuple(f for f in SEARCH_FACTORS if f > 1)
        return tuple(f for f in SEARCH_FACTORS if f < 1) if side > hi * (1 + SEARCH_DOUBT) else ()

    def _searched(self, rgb: np.ndarray, found: list[Detection], default: float, low: float,
                  threshold: float, factors: tuple[float, ...]) -> tuple[list[Detection], float]:
        """What the default pass found, or what the scale among `factors` that finds the most confident cells
        found, and that scale (see SEARCH_BELOW)."""
        lo, hi = self.cell_sizes
        lo, hi = lo * SEARCH_SIZES[0], hi * SEARCH_SIZES[1]

        def cells(found: list[Detection], s: float) -> int:
            return sum(d.score >= threshold and lo <= s * max(d.width, d.height) <= hi for d in found)

        best, best_s = found, default
        most = max(SEARCH_BELOW, int(np.ceil(SEARCH_GAIN * cells(found, default)))) - 1
        for factor in factors:
            again = self._found_at(rgb, default * factor, low)
            if (n := cells(again, default * factor)) > most:
                best, best_s, most = again, default * factor, n
        return best, best_s

    def _cells_scale(self, found: list[Detection], s: float, threshold: float, settle: bool = False) -> float | None:
        """The scale that brings the cells found at scale `s` to the middle of the training fields' cell sizes; None when
        there is nothing to measure, or they are near enough to them already: within CELL_SIZE_LOW and CELL_SIZE_HIGH
        of that range at the default scale, within CELL_SIZE_SETTLE of its middle once rescaled (`settle`)."""
        sizes = self.cell_sizes
        confident = [d.width * d.height for d in found if d.score >= threshold]
        if sizes is None or not confident:
            return None
        side = s * float(np.sqrt(np.median(confident)))
        middle = float(np.sqrt(sizes[0] * sizes[1]))
        lo, hi = (middle / (1 + CELL_SIZE_SETTLE), middle * (1 + CELL_SIZE_SETTLE)) if settle else \
            (CELL_SIZE_LOW * sizes[0], CELL_SIZE_HIGH * sizes[1])
        return None if lo <= side <= hi else s * middle / side

    def _found_at(self, rgb: np.ndarray, s: float, threshold: float) -> list[Detection]:
        """Every detection at or above `threshold` with the field resized by `s`: one pass when it then fits the input,
        else one a tile, each tile's cells kept from its inner part (TILE_OVERLAP) and cells found twice dropped."""
        image = input_image(rgb, s, self.stain)
        ih, iw = image.shape[:2]
        if ih <= self.height and iw <= self.width:
            return decode(*self._run(pad_input(image, self.height, self.width, self.stain)), threshold, s, rgb.shape[:2])
        fill = background_colour(image)
        half_y, half_x = (self.height - _tile_step(self.height)) / 2, (self.width - _tile_step(self.width)) / 2
        corners, scores = [], []
        for ty in _tile_origins(ih, self.height):
            for tx in _tile_origins(iw, self.width):
                tile = image[ty:ty + self.height, tx:tx + self.width]
                heat, box = self._run(pad_input(tile, self.height, self.width, self.stain, fill))
                inner = (tx + half_x if tx else 0, ty + half_y if ty else 0,
                         tx + self.width - half_x if tx + self.width < iw else iw,
                         ty + self.height - half_y if ty + self.height < ih else ih)
                for d in decode(heat, box, threshold, 1.0, tile.shape[:2]):
                    cx, cy = tx + d.x + d.width / 2, ty + d.y + d.height / 2
                    if inner[0] - STRIDE <= cx < inner[2] + STRIDE and inner[1] - STRIDE <= cy < inner[3] + STRIDE:
                        corners.append([(tx + d.x) / s, (ty + d.y) / s, (tx + d.x + d.width) / s, (ty + d.y + d.height) / s])
                        scores.append(d.score)
        x0, y0, x1, y1 = np.array(corners, np.float64).reshape(-1, 4).T
        return _suppressed(_clipped(x0, y0, x1, y1, rgb.shape[:2]), np.array(scores), threshold, NMS_IOU)
