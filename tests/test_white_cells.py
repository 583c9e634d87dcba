"""White cells on generated fields: found among the boxes, and never counted as red cells."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks.synthetic_fields import compose_field, drawn_cell
from edge_app.detect import CellDetector, default_detector_path
from edge_app.smear import find_cells, segment_cells
from edge_app.white_cells import nucleus_shares, white_cells

#: drawn_cell's pink; a white cell's nucleus and cytoplasm in proportion to it as measured on the IML fields
#: (nucleus pixels at 0.75 / 0.17 / 0.77 of the red cells' median colour, channel by channel; pale grey cytoplasm).
PINK = np.array([205, 150, 165])
NUCLEUS = tuple(int(v) for v in PINK * (0.75, 0.17, 0.77))
CYTOPLASM = (214, 196, 212)


def white_cell(kind: str, seed: int = 0) -> np.ndarray:
    """A white cell on black: a lymphocyte (a round nucleus filling most of it) or a neutrophil (three touching lobes)."""
    size = 116 if kind == "neutrophil" else 96
    img = np.zeros((size, size, 3), np.uint8)
    c = size // 2
    cv2.circle(img, (c, c), size // 2 - 4, CYTOPLASM, -1)
    nucleus = np.zeros((size, size), np.uint8)
    if kind == "neutrophil":
        for x, y in ((c - 18, c - 8), (c, c + 12), (c + 18, c - 6)):
            cv2.circle(nucleus, (x, y), 19, 255, -1)
    else:
        cv2.circle(nucleus, (c + 4, c), int(size * 0.38), 255, -1)
    img[nucleus > 0] = NUCLEUS
    noise = np.random.default_rng(seed).normal(0, 4, img.shape) * (img.max(axis=2, keepdims=True) > 0)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _field(kind: str, seed: int, shape: tuple[int, int] = (600, 800)):
    """Red cells, every tenth infected, round one white cell; returns the field, the white cell's and the red cells' places."""
    rng = np.random.default_rng(seed)
    field, placed = compose_field([(white_cell(kind, seed), "white")] + [(drawn_cell(rng, i % 10 == 0), "red") for i in range(60)],
                                  shape, rng)
    white = [p for p in placed if p.label == "white"]
    assert len(white) == 1
    return field, white[0], [p for p in placed if p.label == "red"]


def _on(box, place) -> bool:
    x, y, w, h = box
    return place.x <= x + w / 2 <= place.x + place.width and place.y <= y + h / 2 <= place.y + place.height


def _boxes(cells):
    return [(c.x, c.y, c.width, c.height) for c in cells]


@pytest.mark.parametrize("kind", ["lymphocyte", "neutrophil"])
def test_the_white_cells_box_is_told_from_red_and_infected_ones(kind):
    field, white, red = _field(kind, seed=1)
    boxes = [(p.x, p.y, p.width, p.height) for p in [white] + red]
    flags = white_cells(field, boxes)
    assert flags[0] and not flags[1:].any()  # the infected red cells, with their purple dots, stay red cells


def test_a_field_of_few_boxes_flags_nothing_rather_than_guess():
    field, white, _ = _field("lymphocyte", seed=2)
    assert nucleus_shares(field, [(white.x, white.y, white.width, white.height)]).tolist() == [0.0]
    assert white_cells(field, []).shape == (0,)


@pytest.mark.parametrize("kind", ["lymphocyte", "neutrophil"])
@pytest.mark.parametrize("with_detector", [False, True])
def test_a_white_cell_is_not_counted(kind, with_detector, tiny_detector):
    """The tiny detector boxes dark blobs and the classical segmentation stained ones: each finds the white cell, and only it goes.

    The tiny detector's boxes are 64 px in fields up to 256x384 (larger ones
    are shrunk to its input), about the size of a nucleus, as the real
    detector boxes them.
    """
    field, white, _ = _field(kind, seed=3, shape=(256, 384) if with_detector else (600, 800))
    detector = CellDetector(tiny_detector) if with_detector else None
    before = [(d.x, d.y, d.width, d.height) for d in detector.detect(field)] if detector else _boxes(segment_cells(field))
    on_white = [b for b in before if _on(b, white)]
    assert on_white  # without the rule it would be counted
    assert sorted(_boxes(find_cells(field, detector))) == sorted(b for b in before if b not in on_white)


def test_the_shipped_detector_boxes_a_lymphocyte_and_the_app_leaves_it_out():
    field, white, red = _field("lymphocyte", seed=0)
    detector = CellDetector(default_detector_path())
    assert any(_on((d.x, d.y, d.width, d.height), white) for d in detector.detect(field))
    found = _boxes(find_cells(field, detector))
    assert not any(_on(b, white) for b in found)
    assert sum(any(_on(b, p) for b in found) for p in red) >= 0.95 * len(red)


def _counted_slide(tmp_path, model, kind: str, seed: int):
    """A one-field slide round one white cell, counted by `smear` (classical segmentation): its fields folder, slide
    folder, the white and red cells' places, and what `smear` printed."""
    from click.testing import CliRunner
    from PIL import Image

    from edge_app.cli import main

    field, white, red = _field(kind, seed)
    folder = tmp_path / "fields"
    folder.mkdir()
    Image.fromarray(field).save(folder / "f.png")
    out = tmp_path / "slide"
    res = CliRunner().invoke(main, ["smear", str(folder), "--out", str(out), "--model", str(model), "--segmenter", "classical"])
    assert res.exit_code == 0, res.output
    return folder, out, white, red, res.output


def test_a_slide_records_and_shows_the_white_cells_it_left_out(tmp_path, tiny_model):
    """The count leaves the white cell out; the results, summary, annotated field, report, terminal and web page say so."""
    import json

    from click.testing import CliRunner
    from PIL import Image

    from edge_app.cli import main
    from edge_app.report import WHITE_CELL_COLOUR
    from edge_app.results import read_rows
    from edge_app.slide import CELL_FIELDS, read_summary
    from edge_app.web import create_app

    folder, out, white, red, output = _counted_slide(tmp_path, tiny_model, "lymphocyte", seed=3)
    assert "1 white cell left out" in output

    rows = read_rows(str(out / "cells.csv"), "csv", CELL_FIELDS)
    left_out = [r for r in rows if r["status"] == "white_cell"]
    counted = [r for r in rows if r["status"] == "ok"]
    assert len(left_out) == 1 and _on(tuple(int(left_out[0][k]) for k in ("x", "y", "width", "height")), white)
    assert not any(_on(tuple(int(r[k]) for k in ("x", "y", "width", "height")), white) for r in counted)
    summary = read_summary(out)
    assert summary["white_cells"] == 1 and summary["fields"][0]["white_cells"] == 1
    assert summary["total"]["cells"] == len(counted) >= 0.95 * len(red)

    annotated = np.asarray(Image.open(out / summary["fields"][0]["annotated"]).convert("RGB"))
    x, y, w, h = (int(left_out[0][k]) for k in ("x", "y", "width", "height"))
    assert (annotated[y - 1, x:x + w] == WHITE_CELL_COLOUR).all(axis=1).mean() > 0.9  # its top edge is the white cells' colour
    report = (out / "report.html").read_text()
    assert "1 white cell left out" in report and "double yellow: white cells, left out of the count" in report

    # Resumed, the counts come back from the results file with the white cell still apart.
    res = CliRunner().invoke(main, ["smear", str(folder), "--out", str(out), "--model", str(tiny_model), "--segmenter", "classical",
                                    "--resume"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["white_cells"] == 1
    page = create_app(model=str(tiny_model)).test_client().get(f"/slides/{summary['id']}").get_data(as_text=True)
    assert "1 white cell left out" in page


def test_a_reviewer_sees_each_white_cell_left_out_and_can_put_a_parasitised_one_back(tmp_path, model_copy):
    """A white cell set apart is in the review grid with its crop; rejected, it is counted as a parasitised red cell."""
    import io
    import json
    import re

    from PIL import Image

    from edge_app.slide import read_summary
    from edge_app.web import create_app

    # a review block measured with the white cells shown, as real_fields_cv.py --write-counting writes it
    side = model_copy.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["counting"] = {"threshold": 0.5, "sensitivity": 0.8, "false_positive_rate": 0.01}
    meta["review"] = {"threshold": 0.5, "sensitivity": 0.9, "false_positive_rate": 0.05, "white_cells": True}
    side.write_text(json.dumps(meta))
    _, out, _, _, _ = _counted_slide(tmp_path, model_copy, "neutrophil", seed=4)
    summary = read_summary(out)
    assert summary["review"]["white_cells"] == 1

    client = create_app(model=str(model_copy), reviewer="Dr K").test_client()
    page = client.get(f"/slides/{summary['id']}").get_data(as_text=True)
    keys = re.findall(r'data-cell="([^"]+)"', page)
    assert "0:w0" in keys and "Set apart as a white cell, not counted" in page and "White cells (1)" in page
    crop = client.get(f"/slides/{summary['id']}/cells/0/w0.jpg")
    assert crop.status_code == 200
    # The crop is centred on the white cell: its dark violet nucleus is there, unlike any red cell's crop.
    img = np.asarray(Image.open(io.BytesIO(crop.data)).convert("RGB"), float)
    middle = img[img.shape[0] // 3: 2 * img.shape[0] // 3, img.shape[1] // 3: 2 * img.shape[1] // 3]
    assert ((middle[..., 1] < 60) & (middle[..., 2] > 90)).mean() > 0.2

    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    for key in keys:
        resp = client.post(f"/slides/{summary['id']}/review", data={"csrf_token": token, "cell": key,
                                                                   "decision": "reject" if key == "0:w0" else "confirm"},
                           headers={"Accept": "application/json"})
        assert resp.status_code == 200
    review = read_summary(out)["review"]
    flagged = summary["total"]["parasitized"]
    assert review["status"] == "reviewed" and review["white_cells_parasitised"] == 1
    assert review["confirmed_parasitised"] == flagged + 1 and review["cells_counted"] == summary["total"]["cells"] + 1
    assert review["parasitemia"] == pytest.approx((flagged + 1) / (summary["total"]["cells"] + 1))
    assert (out / "review.jsonl").read_text().count('"key": "0:w0"') == 1
