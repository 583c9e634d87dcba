"""The colour of a classifier's training cells, recorded in its sidecar so the app can match each field's stain to it.

See edge_app.stain. Measured on the model's input pixels of training
patients' cells (never test patients'), as the median of the cell pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_app.model import update_sidecar
from edge_app.stain import cell_colour


def stain_block(pixels: np.ndarray, measured_on: str) -> dict:
    """The sidecar's "stain" block for (N, H, W, 3) uint8 training cells on black."""
    colour = cell_colour(pixels)
    if colour is None:
        raise ValueError("no cell pixels to measure the training stain on")
    return {"cell_colour": [round(float(v), 1) for v in colour], "measured_on": measured_on}


def write_stain(tflite: str | Path, pixels: np.ndarray, measured_on: str) -> dict:
    block = stain_block(pixels, measured_on)
    update_sidecar(tflite, "stain", block)
    return block
