"""Tell white cells from red cells among a field's boxes, so a white cell is never counted as a red one.

A detector or segmentation trained on red cells still boxes a white cell's
nucleus now and then (it is round, cell-sized and stained), and the
classifier, which has only ever seen red cells, then often calls it
Parasitized: on the 105 IML fields, of 34 dark blobs outside every
annotated box (about 30 of them white-cell nuclei), 22 got a box from the
detectors that had not seen their run, and 12 were called Parasitized. A nucleus is easy to tell from a red cell by its stain:
Giemsa's azure on chromatin makes it far darker and bluer than the field's
own red cells (on those fields its middle is about 0.66 of a red cell's
brightness and shifted 0.28 towards blue, where red cells vary by a few
hundredths and parasites, whose chromatin fills a small share of their
cell, stay below). So a box whose middle is mostly such stain is a white
cell. Both measures are relative to the field's own cells, which holds for
any stain strength, lamp or white balance. What it costs: a mature
schizont whose merozoites fill its cell looks the same (one parasite, seen
in two frames of those fields, out of 159 infected cells).
"""

from __future__ import annotations

import numpy as np

#: A nucleus pixel is darker (sum of channels) than this share of the field's typical red cell...
NUCLEUS_DARKNESS = 0.72
#: ...and bluer ((blue - green) / sum of channels) by at least this much.
NUCLEUS_BLUE = 0.10
#: A box whose middle is at least this share nucleus is a white cell. On the IML fields the 20 nuclei the
#: detectors boxed hold 0.55-0.93; every infected cell but one schizont at most 0.18, healthy ones almost none.
NUCLEUS_SHARE = 0.4


def _middle(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Every other pixel of every other row of a box's middle three fifths (its edges hold background and neighbours).

    A nucleus is tens of pixels across, so a quarter of the pixels measure
    its share as well as all of them, at a quarter of the work.
    """
    x, y, w, h = (int(v) for v in box)
    return rgb[max(0, y + h // 5):y + h - h // 5:2, max(0, x + w // 5):x + w - w // 5:2].reshape(-1, 3)


def nucleus_shares(rgb: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Each box's share of white-cell nucleus stain in its middle, against the field's typical cell (all the boxes).

    With only a handful of boxes the typical cell may itself be a white
    cell; then nothing stands out and every share is low, which leaves the
    boxes counted rather than guessing.
    """
    middles = [_middle(rgb, b) for b in boxes]
    sizes = np.array([len(m) for m in middles], int)
    if not sizes.sum():
        return np.zeros(len(boxes))
    r, g, b = np.concatenate(middles).astype(np.float32).T
    level = r + g + b
    blue = (b - g) / np.maximum(level, 1.0)
    nucleus = (level < NUCLEUS_DARKNESS * np.median(level)) & (blue > np.median(blue) + NUCLEUS_BLUE)
    ends = np.cumsum(sizes)
    counts = np.concatenate([[0], np.cumsum(nucleus)])  # nucleus pixels before each index
    return (counts[ends] - counts[ends - sizes]) / np.maximum(sizes, 1)


def white_cells(rgb: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """A bool per box: True where it holds a white cell's nucleus rather than a red cell."""
    return nucleus_shares(rgb, boxes) >= NUCLEUS_SHARE
