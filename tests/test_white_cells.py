"""Finding the white cells of an annotated field, which the boxes leave out, to show them to the detector as not red cells."""

from __future__ import annotations

import cv2
import numpy as np

from training.white_cells import white_cell_nuclei

RED_CELL = (180, 100, 150)
NUCLEUS = (110, 40, 140)  # darker than a red cell, and bluer: Giemsa's azure on chromatin
BACKGROUND = (225, 230, 215)


def _field(nuclei=(), boxed_dark=(), specks=()):
    """Red cells (boxed) on a pale background, plus unboxed white-cell nuclei, boxed dark cells and small specks."""
    img = np.zeros((400, 600, 3), np.uint8)
    img[:] = BACKGROUND
    boxes = []
    for cx in range(60, 560, 90):
        for cy in (60, 340):
            cv2.circle(img, (cx, cy), 35, RED_CELL, -1)
            boxes.append((cx - 40, cy - 40, 80, 80))
    for cx, cy in boxed_dark:  # an infected cell is boxed, however dark its parasite
        cv2.circle(img, (cx, cy), 35, RED_CELL, -1)
        cv2.circle(img, (cx, cy), 22, NUCLEUS, -1)
        boxes.append((cx - 40, cy - 40, 80, 80))
    for cx, cy in nuclei:
        cv2.circle(img, (cx, cy), 55, (205, 195, 210), -1)  # pale cytoplasm
        for dx, dy in ((-15, -8), (6, -16), (14, 10)):
            cv2.circle(img, (cx + dx, cy + dy), 15, NUCLEUS, -1)
    for cx, cy in specks:
        cv2.circle(img, (cx, cy), 5, NUCLEUS, -1)
    return img, np.array(boxes, float)


def test_an_unboxed_white_cell_nucleus_is_found_and_nothing_else():
    img, boxes = _field(nuclei=[(300, 200)], boxed_dark=[(480, 200)], specks=[(120, 200)])
    found = white_cell_nuclei(img, boxes)
    assert len(found) == 1 and np.hypot(*(found[0] - (300, 200))) < 15


def test_the_rule_follows_the_fields_stain():
    """A heavier stain darkens red cells and nuclei alike: the nucleus is still found, the red cells still are not."""
    img, boxes = _field(nuclei=[(300, 200)])
    heavy = (img.astype(np.float32) * (0.75, 0.7, 0.8)).astype(np.uint8)
    assert len(white_cell_nuclei(heavy, boxes)) == 1
    assert len(white_cell_nuclei(_field()[0], boxes)) == 0


def test_nothing_at_the_border_or_without_boxes():
    img, boxes = _field(nuclei=[(300, 10)])  # cut by the top edge: it may be a cut red cell
    assert len(white_cell_nuclei(img, boxes)) == 0
    assert white_cell_nuclei(img, np.zeros((0, 4))).shape == (0, 2)


def test_crops_around_a_white_cell_hold_it_well_inside():
    from training.detector import DetectorConfig, Field, sample

    rng = np.random.default_rng(1)
    img = np.zeros((400, 600, 3), np.uint8)
    img[:] = BACKGROUND
    cv2.circle(img, (560, 370), 30, NUCLEUS, -1)  # near a corner: crops are clipped to the field
    field = Field("F", img, np.zeros((0, 4), np.float32), np.array([[560.0, 370.0]]))
    cfg = DetectorConfig(scale_range=(1.0, 1.0))

    def holds_it(crop):
        return np.ptp(crop.astype(np.float32).sum(axis=2)) > 120  # background alone is flat, whatever the augmentation

    assert all(holds_it(sample(field, 96, rng, cfg, at=field.white_cells[0])[0]) for _ in range(100))
    assert sum(holds_it(sample(field, 96, rng, cfg)[0]) for _ in range(100)) < 50
