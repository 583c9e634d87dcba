"""Drawn white cells for the detector's training crops (an experiment: they did not teach it real white cells)."""

from __future__ import annotations

import cv2
import numpy as np

def test_a_drawn_white_cell_takes_the_place_of_the_red_cells_under_it():
    from training.white_cells import add_white_cells

    rng = np.random.default_rng(0)
    crop = np.full((96, 96, 3), 225.0, np.float32)
    boxes = np.array([[x, y, 16, 16] for y in range(4, 90, 22) for x in range(4, 90, 22)], np.float32)
    for x, y, w, h in boxes.astype(int):
        cv2.circle(crop, (x + 8, y + 8), 8, (180, 100, 150), -1)
    for _ in range(20):
        img, kept = add_white_cells(crop, boxes, 16.0, rng, white_cells=1, platelets=0)
        assert img.shape == crop.shape and img.dtype == np.float32
        changed = np.abs(img - crop).sum(axis=2) > 30
        dropped = [b for b in boxes.tolist() if b not in kept.tolist()]
        for x, y, w, h in dropped:  # every dropped red cell is mostly covered by the white cell
            assert changed[int(y):int(y + h), int(x):int(x + w)].mean() > 0.3
        # A white cell's nucleus is darker and bluer than any red cell.
        if changed.any():
            darkest = img.reshape(-1, 3)[np.argmin(img.sum(axis=2))]
            assert darkest.sum() < 0.8 * (180 + 100 + 150) and darkest[2] > darkest[1]
