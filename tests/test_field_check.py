"""Field checks: a field unlike the training fields (stain, magnification, focus) is flagged, a familiar one is not."""

from __future__ import annotations

import cv2
import numpy as np

from edge_app.field_check import STAIN_WARNING, check_field, field_stats, training_ranges, warnings
from edge_app.smear import cells_in_boxes


def _field(colour=(150, 80, 120), radius=20, blur=0.0, seed=0):
    """Textured cells (a pale centre and a grainy stain, as in a real smear) on a bright background."""
    rng = np.random.default_rng(seed)
    field = np.full((240, 320, 3), 225, np.float32)
    boxes = []
    for cy in range(40, 220, 60):
        for cx in range(40, 300, 60):
            cv2.circle(field, (cx, cy), radius, colour, -1)
            cv2.circle(field, (cx, cy), radius // 3, tuple(min(255, c + 40) for c in colour), -1)
            boxes.append((cx - radius, cy - radius, 2 * radius, 2 * radius))
    field += rng.normal(0, 12, field.shape)
    if blur:
        field = cv2.GaussianBlur(field, (0, 0), blur)
    rgb = np.clip(field, 0, 255).astype(np.uint8)
    return rgb, cells_in_boxes(rgb, boxes)


def _ranges():
    stats = [field_stats(*_field(colour=c, seed=i), scale=0.5) for i, c in enumerate([(150, 80, 120), (140, 70, 115), (160, 95, 130)])]
    return training_ranges(stats)


def test_a_field_like_the_training_fields_raises_nothing():
    assert warnings(field_stats(*_field(colour=(152, 84, 122), seed=9), scale=0.5), _ranges()) == []


def test_an_unfamiliar_stain_a_wrong_magnification_and_blur_are_each_flagged():
    ranges = _ranges()
    stain = warnings(field_stats(*_field(colour=(200, 190, 60)), scale=0.5), ranges)
    assert len(stain) == 1 and "stain colour" in stain[0]
    small = warnings(field_stats(*_field(radius=10), scale=0.5), ranges)
    assert len(small) == 1 and "objective" in small[0]
    blurred = warnings(field_stats(*_field(blur=2.0), scale=0.5), ranges)
    assert len(blurred) == 1 and "out of focus" in blurred[0]


def test_no_cells_is_always_flagged_and_no_ranges_flag_nothing_else():
    assert "no red cells found" in warnings(field_stats(np.full((50, 50, 3), 225, np.uint8), [], 0.5), _ranges())[0]
    assert warnings(field_stats(*_field(colour=(200, 190, 60)), scale=0.5), None) == []


def test_check_field_measures_at_the_detectors_scale_against_its_training_fields():
    class Detector:  # what check_field reads of an edge_app.detect.CellDetector
        scale = 0.5
        meta = {"field_ranges": _ranges()}

    stats, warned = check_field(*_field(colour=(200, 190, 60)), Detector())
    assert stats.cell_size == 20 and len(warned) == 1 and warned[0].startswith(STAIN_WARNING)
    # classical segmentation has no training fields to compare with: measured, never warned but for no cells
    assert check_field(*_field(colour=(200, 190, 60)), None)[1] == []
