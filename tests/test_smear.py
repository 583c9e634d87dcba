"""Segmentation and counting on composed fields whose cells, positions and labels are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.synthetic_fields import BACKGROUND, compose_field, match
from edge_app.model import ModelBundle
from edge_app.smear import analyse_field, segment_cells
from tests.conftest import BLUE, RED, cell

FIELD = (700, 900)


def _cells(n: int, rng: np.random.Generator, red_every: int = 0) -> list[tuple[np.ndarray, str]]:
    out = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(34, 58, 2))
        red = red_every and i % red_every == 0
        out.append((np.asarray(cell(RED if red else BLUE, (w, h), seed=i)), "Parasitized" if red else "Uninfected"))
    return out


def _boxes(cells):
    return [(c.x, c.y, c.width, c.height) for c in cells]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separate_cells_are_found(seed):
    rng = np.random.default_rng(seed)
    field, truth = compose_field(_cells(140, rng), FIELD, rng)
    found = segment_cells(field)
    hits = match(_boxes(found), truth)
    assert len(truth) > 80
    assert hits / len(truth) >= 0.9, "recall"
    assert hits / len(found) >= 0.9, "precision"


def test_touching_pairs_are_split():
    rng = np.random.default_rng(3)
    field, truth = compose_field(_cells(60, rng), FIELD, rng, touching_pairs=20)
    pairs = truth[:40]
    for a, b in zip(pairs[::2], pairs[1::2]):  # the pairs really touch: no background column between them
        assert b.x <= a.x + a.width
    found = segment_cells(field)
    assert match(_boxes(found), pairs) / len(pairs) >= 0.9
    assert match(_boxes(found), truth) / len(found) >= 0.9


def test_blank_field_debris_and_border_cells_are_not_counted():
    blank = np.full((300, 400, 3), BACKGROUND, np.uint8)
    assert segment_cells(blank) == []
    rng = np.random.default_rng(4)
    field, truth = compose_field(_cells(12, rng), (300, 400), rng)
    field[10:14, 10:14] = (90, 40, 120)  # a stain speck
    half = np.asarray(cell(BLUE, (50, 50)))
    field[100:150, :25] = np.where(half[:, 25:].max(axis=2, keepdims=True) > 25, half[:, 25:], field[100:150, :25])  # cut by the border
    found = segment_cells(field)
    assert len(found) == len(truth) == match(_boxes(found), truth)


def test_crops_are_cells_on_black_like_the_training_images():
    rng = np.random.default_rng(5)
    field, truth = compose_field(_cells(10, rng), (300, 400), rng)
    for c in segment_cells(field):
        assert c.crop[0, 0].tolist() == [0, 0, 0] and c.crop[-1, -1].tolist() == [0, 0, 0]
        centre = c.crop[c.crop.shape[0] // 2, c.crop.shape[1] // 2]
        assert abs(int(centre[2]) - BLUE[2]) < 20  # the cell's own colour, not background


def test_parasitemia_of_a_field_matches_the_truth(tiny_model):
    model = ModelBundle(tiny_model)
    rng = np.random.default_rng(6)
    field, truth = compose_field(_cells(120, rng, red_every=8), FIELD, rng, touching_pairs=5)
    results = analyse_field(model, field)
    true_red = sum(t.label == "Parasitized" for t in truth)
    found_red = sum(r.label == "Parasitized" for r in results)
    assert len(results) >= 0.95 * len(truth)
    assert true_red > 5 and abs(found_red - true_red) <= 1
    for r in results:  # every call is the truth of the cell it sits on
        cx, cy = r.cell.x + r.cell.width / 2, r.cell.y + r.cell.height / 2
        t = next(t for t in truth if t.x <= cx < t.x + t.width and t.y <= cy < t.y + t.height)
        assert r.label == t.label


def test_rejects_non_rgb_arrays():
    with pytest.raises(ValueError, match="RGB uint8"):
        segment_cells(np.zeros((10, 10), np.uint8))


def test_uneven_lighting_is_evened_out():
    """A microscope field is darker at the corners; pale cells there must still be found."""
    rng = np.random.default_rng(7)
    pale = [(np.asarray(cell((200, 120, 150), tuple(int(v) for v in rng.integers(36, 56, 2)), seed=i)), "Uninfected")
            for i in range(300)]
    field, truth = compose_field(pale, (1232, 1640), rng, touching_pairs=10)
    h, w = field.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    vignette = 1 - 0.45 * (((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2) / 2  # corners at 55 %
    dark_corners = (field * vignette[..., None]).astype(np.uint8)
    found = segment_cells(dark_corners)
    hits = match(_boxes(found), truth)
    assert hits / len(truth) >= 0.98 and hits / len(found) >= 0.98


def _discs(centres, shape=(300, 400), radius=26):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    field = np.full((*shape, 3), 230, np.uint8)
    for cx, cy in centres:
        field[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2] = (150, 80, 120)
    return field


def _scale_bar(field, x, y):
    """A microscope camera's burnt-in scale bar and its label, in black."""
    import cv2

    cv2.line(field, (x, y), (x + 90, y), (0, 0, 0), 3)
    cv2.putText(field, "50 um", (x + 10, y + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (10, 10, 10), 2)
    return field


@pytest.mark.parametrize("with_detector", [False, True])
def test_scale_bar_and_cells_under_it_are_not_counted(with_detector, tiny_detector):
    from edge_app.detect import CellDetector
    from edge_app.smear import find_cells

    centres = [(60, 60), (180, 60), (300, 60), (60, 200), (180, 200)]
    field = _scale_bar(_discs(centres), 150, 190)  # over the cell at (180, 200); the label below it
    field = _scale_bar(field, 260, 250)  # on the background alone
    detector = CellDetector(tiny_detector) if with_detector else None
    found = find_cells(field, detector)
    centres_found = sorted((c.x + c.width // 2, c.y + c.height // 2) for c in found)
    assert len(found) == 4, centres_found
    assert all(abs(cx - 180) > 30 or abs(cy - 200) > 30 for cx, cy in centres_found)
    assert find_cells(_discs(centres), detector).__len__() == 5  # the same cells without the bar are all counted


def test_demo_fields_script_writes_fields_and_their_truth(tmp_path):
    from benchmarks.synthetic_fields import main

    assert main(["--out", str(tmp_path / "demo"), "--fields", "2", "--cells", "30", "--infected-share", "0.3"]) == 0
    truth = json.loads((tmp_path / "demo" / "truth.json").read_text())
    assert sorted(truth) == ["field-01.png", "field-02.png"]
    assert all(len(cells) > 10 for cells in truth.values())
    assert any(c["label"] == "Parasitized" for cells in truth.values() for c in cells)
    found = segment_cells(np.asarray(Image.open(tmp_path / "demo" / "field-01.png")))
    assert abs(len(found) - len(truth["field-01.png"])) <= 3  # drawn cells look like cells to the segmentation


def test_likely_cells_alone_are_classified_in_all_eight_orientations(tiny_model, monkeypatch):
    from edge_app import smear
    from edge_app.smear import Cell, classify_cells

    model = ModelBundle(tiny_model)
    monkeypatch.setattr(model, "cell_colour", None)  # the stand-in network reads raw pixels
    seen = []

    def corner_logits(px):  # a stand-in network that reads only the top-left pixel's red level
        seen.append(len(px))
        return (px[:, 0, 0, 0].astype(np.float32) - 128) / 16

    monkeypatch.setattr(model, "logits", corner_logits)
    size = model.input.size

    def square(top_left: int, bottom_right: int) -> Cell:
        crop = np.full((size, size, 3), 128, np.uint8)
        crop[0, 0, 0], crop[-1, -1, 0] = top_left, bottom_right
        return Cell(0, 0, size, size, size * size, crop)

    # Two views (as seen, mirrored) read the top-left and top-right corners; all eight read each corner twice.
    unlikely, likely = square(0, 255), square(255, 0)
    results = classify_cells(model, [unlikely, likely], threshold=0.5)
    assert seen == [2, 2] + [1] * 6  # both cells in two views, then the likely one in the other six
    assert results[0].probability == pytest.approx(float(model.predict(unlikely.crop[None], views=2)[0]))
    assert results[0].probability < smear.RESCORE_FLOOR
    assert results[1].probability == pytest.approx(float(model.predict(likely.crop[None], views=8)[0]))
    assert results[1].probability != pytest.approx(float(model.predict(likely.crop[None], views=2)[0]))
