"""The real-field scoring protocol (training.fields): matching, difficult boxes, infected cells, runs, cell export."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("scipy")

from training.fields import Box, export_cells, iou_matrix, load_annotations, match_boxes, pooled, runs_of, score_field  # noqa: E402


def test_iou_of_known_boxes():
    iou = iou_matrix([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]])
    assert iou[0] == pytest.approx([1.0, 50 / 150, 0.0])


def test_matching_is_one_to_one():
    truth = np.array([[0, 0, 10, 10], [30, 0, 10, 10]])
    # two detections on the first cell: only one may count; the second cell is found once
    detected = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [30, 1, 10, 10]])
    pairs = match_boxes(truth, detected)
    assert len(pairs) == 2 and {i for i, _ in pairs} == {0, 1}
    assert match_boxes(truth, np.zeros((0, 4))) == []


def test_matching_prefers_more_matches_over_higher_overlap():
    # detection 0 overlaps both boxes; greedy best-IoU would give it box 0 and leave box 1 unmatched
    truth = np.array([[0, 0, 10, 10], [4, 0, 10, 10]])
    detected = np.array([[2, 0, 10, 10], [0, 0, 10, 10]])
    assert len(match_boxes(truth, detected)) == 2


def test_score_field_counts_every_outcome():
    truth = [Box(0, 0, 10, 10), Box(30, 0, 10, 10), Box(60, 0, 10, 10, "ring"), Box(90, 0, 10, 10, "difficult"),
             Box(120, 0, 10, 10, "gametocyte")]
    detected = np.array([[0, 0, 10, 10], [30, 0, 10, 10], [62, 2, 10, 10], [90, 0, 10, 10], [200, 200, 10, 10]])
    called = np.array([False, True, True, True, False])
    s = score_field(truth, detected, called)
    assert s.cells == 4 and s.infected == 2  # the difficult box counts neither way
    assert s.detections == 4  # the detection on the difficult box is left out
    assert s.matched == 2  # the two healthy cells; the ring's detection overlaps it at IoU 64/136 = 0.47 < 0.5
    assert s.infected_found == 1  # but IoU >= 0.3 finds the ring; the gametocyte is missed
    assert s.infected_unboxed == 1  # by the detector: nothing overlaps it
    assert s.called_off_boxes == 0  # the detection on no box was called Uninfected
    assert score_field(truth, detected, np.ones(5, bool)).called_off_boxes == 1
    assert s.healthy_matched == 2 and s.healthy_called_parasitized == 1
    assert s.recall == pytest.approx(2 / 4) and s.precision == pytest.approx(2 / 4)
    assert s.true_parasitemia == pytest.approx(0.5) and s.raw_parasitemia == pytest.approx(2 / 4)
    both = pooled([s, s])
    assert both.cells == 8 and both.recall == s.recall


def test_runs_split_at_gaps_in_frame_numbers():
    names = ["PA171690.JPG", "PA171691.JPG", "PA171692.JPG", "PA171810.JPG", "PA171811.JPG", "PA171930.JPG"]
    assert runs_of(list(reversed(names))) == [names[:3], names[3:5], names[5:]]
    with pytest.raises(ValueError):
        runs_of(["no-number.jpg"])


def test_export_cells_writes_one_crop_per_box(tmp_path):
    from PIL import Image

    field = np.full((120, 160, 3), 230, np.uint8)
    field[20:60, 20:60] = (150, 80, 120)
    field[60:100, 90:130] = (150, 80, 120)
    (tmp_path / "images").mkdir()
    Image.fromarray(field).save(tmp_path / "images" / "F0001.png")
    objects = [{"type": "red blood cell", "bbox": {"x": "20", "y": "20", "w": "40", "h": "40"}},
               {"type": "ring", "bbox": {"x": "90", "y": "60", "w": "40", "h": "40"}},
               {"type": "difficult", "bbox": {"x": "0", "y": "0", "w": "5", "h": "5"}}]
    (tmp_path / "annotations.json").write_text(json.dumps([{"image_name": "F0001.png", "objects": objects}]))
    assert [b.kind for b in load_annotations(tmp_path / "annotations.json")["F0001.png"]] == ["red blood cell", "ring", "difficult"]
    counts = export_cells(tmp_path, ["F0001.png"], tmp_path / "cells")
    assert counts == {"Uninfected": 1, "Parasitized": 1}
    crop = np.asarray(Image.open(next((tmp_path / "cells" / "Parasitized").glob("*.png"))))
    assert crop.shape[:2] == (44, 44)  # the box and the crop margin
    assert (crop[0, 0] == 0).all() and (crop[22, 22] == (150, 80, 120)).all()  # the cell on black
    # Stain-matched like the app matches a field before classifying: the field's cells take the reference colour.
    counts = export_cells(tmp_path, ["F0001.png"], tmp_path / "matched", stain=([180.0, 160.0, 150.0], 16, "pad"))
    matched = np.asarray(Image.open(next((tmp_path / "matched" / "Parasitized").glob("*.png"))))
    assert (matched[0, 0] == 0).all() and np.abs(matched[22, 22].astype(int) - (180, 160, 150)).max() <= 2
