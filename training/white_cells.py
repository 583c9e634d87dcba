"""White cells and platelet clumps drawn into the detector's training crops, as things it must not box.

The annotated fields hold only a few white cells (about one in ten fields)
and the boxes do not mark them, so the detector sees too few to learn that
a large cell with a dark violet nucleus is not a red cell: it boxed their
nuclei, and the classifier then called them Parasitized. Drawn ones are
shaped after the kinds of a thin film (a lymphocyte's round nucleus filling
the cell, a neutrophil's chain of 2-5 lobes, an eosinophil's two lobes and
orange granules, each 1.2-1.8 red cells across) and coloured from the
field's own red cells and background, so that they take the stain
augmentation like everything else in the crop. Red cells they cover lose
their boxes. Pure numpy and OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Pixels per output pixel when drawing, so small shapes come out smooth after area averaging.
SUPERSAMPLE = 4


def _soft(mask: np.ndarray, size: int) -> np.ndarray:
    """A supersampled 0/1 mask averaged down to `size` pixels: an anti-aliased alpha in [0, 1]."""
    return cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


def white_cell(diameter: float, cell_colour: np.ndarray, background: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float32, alpha) patches of one white cell about `diameter` pixels across."""
    size = max(4, int(round(diameter * 1.1)))
    big = size * SUPERSAMPLE
    c = big / 2
    r = diameter * SUPERSAMPLE / 2
    cyto = np.zeros((big, big), np.uint8)
    cv2.ellipse(cyto, ((c, c), (2 * r, 2 * r * rng.uniform(0.85, 1.0)), rng.uniform(0, 180)), 1, -1)
    nucleus = np.zeros_like(cyto)
    kind = rng.choice(["lymphocyte", "neutrophil", "eosinophil"], p=[0.35, 0.5, 0.15])
    if kind == "lymphocyte":
        off = rng.uniform(-0.15, 0.15, 2) * r
        cv2.ellipse(nucleus, ((c + off[0], c + off[1]), (2 * r * rng.uniform(0.65, 0.85),) * 2, 0), 1, -1)
    else:
        lobes = 2 if kind == "eosinophil" else int(rng.integers(2, 6))
        start, turn = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.3)
        arc = r * rng.uniform(0.35, 0.5)
        points = [(c + arc * np.cos(start + i * turn), c + arc * np.sin(start + i * turn)) for i in range(lobes)]
        lobe = r * rng.uniform(0.22, 0.32)
        for i, (x, y) in enumerate(points):
            cv2.circle(nucleus, (int(x), int(y)), int(lobe * rng.uniform(0.85, 1.15)), 1, -1)
            if i:
                cv2.line(nucleus, (int(points[i - 1][0]), int(points[i - 1][1])), (int(x), int(y)), 1, max(1, int(lobe * 0.5)))
    nucleus &= cyto
    granules = np.zeros_like(cyto)
    if kind == "eosinophil":
        for _ in range(int(r)):
            x, y = rng.uniform(c - r, c + r, 2)
            cv2.circle(granules, (int(x), int(y)), max(1, int(r * 0.04)), 1, -1)
        granules &= cyto & (1 - nucleus)
    alpha = _soft(cyto, size)
    n, g = _soft(nucleus, size), _soft(granules, size)
    # Colours from the field: cytoplasm a pale grey-lilac veil over the background, the nucleus a darker,
    # bluer violet than any red cell (Giemsa's azure on chromatin), eosinophil granules orange-red.
    pale = background * rng.uniform([0.8, 0.76, 0.85], [0.95, 0.92, 1.0])
    violet = cell_colour * rng.uniform([0.3, 0.2, 0.55], [0.55, 0.45, 0.85])
    orange = np.array([225.0, 120.0, 90.0]) * rng.uniform(0.85, 1.05)
    rgb = pale[None, None] * (1 - n[..., None]) + violet[None, None] * n[..., None]
    rgb = rgb * (1 - g[..., None]) + orange[None, None] * g[..., None]
    rgb = rgb * (1 + cv2.GaussianBlur(rng.normal(0, 0.05, (size, size)).astype(np.float32), (0, 0), 0.7)[..., None])  # texture
    return rgb.astype(np.float32), alpha


def platelet_clump(cell: float, cell_colour: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, alpha) of 3-15 platelets, each a tenth to a fifth of a red cell, clustered within about a cell."""
    size = max(4, int(round(cell * rng.uniform(0.6, 1.4))))
    big = size * SUPERSAMPLE
    mask = np.zeros((big, big), np.uint8)
    for _ in range(int(rng.integers(3, 16))):
        x, y = rng.normal(big / 2, big / 6, 2).clip(big * 0.1, big * 0.9)
        cv2.circle(mask, (int(x), int(y)), max(1, int(cell * SUPERSAMPLE * rng.uniform(0.05, 0.1))), 1, -1)
    colour = cell_colour * rng.uniform([0.45, 0.3, 0.6], [0.7, 0.5, 0.9])
    rgb = np.broadcast_to(colour, (size, size, 3)).astype(np.float32)
    return rgb, _soft(mask, size) * rng.uniform(0.7, 1.0)


def add_white_cells(img: np.ndarray, boxes: np.ndarray, cell: float, rng: np.random.Generator,
                    white_cells: int = 1, platelets: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Draw white cells and platelet clumps into a float RGB crop; the boxes of red cells a white cell covers are dropped.

    `cell` is a red cell's diameter in the crop's pixels. Returns the new
    image and the boxes still visible.
    """
    img = img.astype(np.float32).copy()
    h, w = img.shape[:2]
    background = np.percentile(img.reshape(-1, 3), 90, axis=0)
    stained = img[img.sum(axis=2) < 0.85 * background.sum()]
    cell_colour = np.median(stained, axis=0) if len(stained) > 50 else background * [0.7, 0.45, 0.6]
    keep = np.ones(len(boxes), bool)
    shapes = [("white", white_cell(cell * rng.uniform(1.2, 1.8), cell_colour, background, rng)) for _ in range(white_cells)]
    shapes += [("platelets", platelet_clump(cell, cell_colour, rng)) for _ in range(platelets)]
    for kind, (rgb, alpha) in shapes:
        s = rgb.shape[0]
        x0, y0 = int(rng.integers(-s // 3, max(1, w - 2 * s // 3))), int(rng.integers(-s // 3, max(1, h - 2 * s // 3)))
        xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + s), min(h, y0 + s)
        if xb <= xa or yb <= ya:
            continue
        a = alpha[ya - y0:yb - y0, xa - x0:xb - x0, None]
        img[ya:yb, xa:xb] = img[ya:yb, xa:xb] * (1 - a) + rgb[ya - y0:yb - y0, xa - x0:xb - x0] * a
        if kind == "white" and len(boxes):
            r = s / 2 / 1.1
            dx, dy = boxes[:, 0] + boxes[:, 2] / 2 - (x0 + s / 2), boxes[:, 1] + boxes[:, 3] / 2 - (y0 + s / 2)
            keep &= np.hypot(dx, dy) > r * 0.8
    return img, boxes[keep]
