"""Where the white cells of an annotated field are, so the detector can be shown them as things not to box.

The IML boxes mark red cells only. White cells are not boxed, so they are
already negatives for the detector, but there are about thirty in 105
fields against 12,000 red cells, too few for it to learn them: on unseen
fields it boxed their nuclei, and the classifier called them Parasitized.
Their nuclei are easy to find where the red cells are known: the darkest,
bluest stain in the field (Giemsa's azure on chromatin), darker than the
field's own red cells, outside every box, and larger than a platelet. The
detector's training (`training.detector`, `white_cell_share`) centres a
share of its crops on them. Pure numpy and OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np

#: A nucleus pixel is darker (sum of channels) than this share of the field's typical red cell.
NUCLEUS_DARKNESS = 0.72
#: A nucleus is at least this share of a typical red cell's box: smaller ones are platelets or specks.
MIN_NUCLEUS_AREA = 0.12
#: Pixels from the image border within which a blob may be a cut red cell: left out.
BORDER = 3


def white_cell_nuclei(rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, 2) centres (x, y) of the stained blobs of a field that look like white-cell nuclei and lie in no box.

    `boxes`: the field's red-cell boxes (x, y, w, h) in `rgb`'s pixels. The
    red cells' level is measured in the middle of the boxes (their edges
    hold background), so the rule adapts to each field's stain.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        return np.zeros((0, 2))
    h, w = rgb.shape[:2]
    inner = np.zeros((h, w), bool)
    for x, y, bw, bh in boxes.astype(int):
        inner[max(0, y + bh // 5):y + bh - bh // 5, max(0, x + bw // 5):x + bw - bw // 5] = True
    level = rgb.astype(np.float32).sum(axis=2)
    if not inner.any():
        return np.zeros((0, 2))
    dark = (level < NUCLEUS_DARKNESS * np.median(level[inner])) & (rgb[..., 2] >= rgb[..., 1])
    dark = cv2.morphologyEx(dark.astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, _, stats, centres = cv2.connectedComponentsWithStats(dark)
    min_area = MIN_NUCLEUS_AREA * float(np.median(boxes[:, 2] * boxes[:, 3]))
    keep = []
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        cx, cy = centres[i]
        if area < min_area or x <= BORDER or y <= BORDER or x + bw >= w - BORDER or y + bh >= h - BORDER:
            continue
        if not inner[int(cy), int(cx)]:
            keep.append((cx, cy))
    return np.array(keep, np.float64).reshape(-1, 2)
