"""Match each field's stain to the colour of the cells the classifier was trained on.

Giemsa's shade differs far more between labs, stain batches and cameras
than between the cells of one slide, and a classifier trained on one lab's
slides reads a darker or more magenta stain as "parasite" on every cell.
So before classifying a field's cells, each colour channel of their pixels
is scaled so that the field's median cell colour becomes the training
cells' median (`"stain": {"cell_colour": [...]}` in the classifier's
sidecar). One gain per channel for the whole field keeps every difference
between the field's cells, which is where the parasites are; only the
field's overall shade moves. The effect on real fields is measured by
benchmarks/real_fields.py (models/DETAILS.md, "Real fields").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: A field needing a larger change than this in any channel is not a Giemsa smear like the training ones; its
#: gain is capped (the field check warns about its colour) rather than amplifying noise without bound.
MAX_GAIN = 3.0


def cell_colour(pixels: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | None:
    """Median RGB of the cell pixels (every pixel not pure black: cells are cut out on black); None when there are none.

    `pixels`: one array (..., 3), or a list of crops of different sizes.
    """
    if isinstance(pixels, np.ndarray):
        flat = pixels.reshape(-1, 3)
    else:
        flat = np.concatenate([p.reshape(-1, 3) for p in pixels]) if len(pixels) else np.zeros((0, 3), np.uint8)
    flat = flat[flat.any(axis=1)]
    return np.median(flat, axis=0).astype(np.float32) if len(flat) else None


def stain_gains(cells: np.ndarray, reference: Sequence[float]) -> np.ndarray:
    """Per-channel gains taking these cells' (one field's) median colour to `reference`; ones when there are no cell pixels."""
    colour = cell_colour(cells)
    if colour is None:
        return np.ones(3, np.float32)
    gains = np.asarray(reference, np.float32) / np.maximum(colour, 1.0)
    return np.clip(gains, 1.0 / MAX_GAIN, MAX_GAIN)


def match_stain(cells: np.ndarray, reference: Sequence[float]) -> np.ndarray:
    """One field's cells as the model's input pixels ((N, H, W, 3) uint8, on black), the field's stain matched to `reference`.

    Measured and applied on the model's input pixels, as the reference was
    measured on the training cells' (quantization.stain_reference): the
    same resize on both sides, so edge pixels blended with the black
    background weigh the same in both medians.
    """
    return apply_gains(cells, stain_gains(cells, reference))


def apply_gains(pixels: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """uint8 RGB pixels with each channel scaled by its gain, rounded and clipped; black stays black."""
    return np.clip(np.rint(pixels.astype(np.float32) * gains), 0, 255).astype(np.uint8)
