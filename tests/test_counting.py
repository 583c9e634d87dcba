"""The counting threshold and its error rates, and how smear counting uses them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_app.model import ModelBundle, ModelError
from edge_app.review import ENLARGED_AREA, REVIEW_SHOWS
from quantization.counting import add_counting, counting_threshold, pooled_counting, write_field_counting


def test_threshold_keeps_false_positives_within_the_limit():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(1000, int), np.ones(1000, int)]
    p = np.r_[rng.beta(1, 8, 1000), rng.beta(8, 1, 1000)]
    block = counting_threshold(y, p, max_fpr=0.01)
    assert block["false_positive_rate"] == np.mean(p[:1000] >= block["threshold"]) <= 0.01
    assert block["sensitivity"] == np.mean(p[1000:] >= block["threshold"])
    # The lowest such threshold: one notch lower lets an eleventh healthy cell through.
    assert np.mean(p[:1000] >= np.nextafter(block["threshold"], 0) - 1e-12) > 0.01
    with pytest.raises(ValueError, match="both"):
        counting_threshold(np.zeros(5, int), np.zeros(5), 0.01)


def test_pooled_counting_records_how_the_rates_vary_between_runs():
    pale = (np.linspace(0, 0.5, 1000), np.full(20, 0.9))  # (other detections' P, infected cells' P)
    dark = (np.concatenate([np.linspace(0, 0.5, 980), np.full(20, 0.95)]), np.full(20, 0.97))
    one = pooled_counting([pale], 0.01)
    assert "sensitivity_sd" not in one
    both = pooled_counting([pale, dark], 0.01)
    t = both["threshold"]
    assert both["runs"] == 2 and both["false_positive_rate_sd"] > 0.01  # the dark run's 2 % against the pale run's 0 %
    assert both["sensitivity_sd"] == pytest.approx(np.std([np.mean(pale[1] >= t), np.mean(dark[1] >= t)], ddof=1))
    assert both["false_positive_rate_sd"] == pytest.approx(np.std([np.mean(pale[0] >= t), np.mean(dark[0] >= t)], ddof=1))


def test_counting_block_is_written_and_read_back(model_copy):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (200, 16, 16, 3), dtype=np.uint8)
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype(int)  # the tiny model's own rule: red is Parasitized
    block = add_counting(model_copy, x, y, 0.02, "test cells")
    assert block["false_positive_rate"] <= 0.02 and block["sensitivity"] > 0.5
    bundle = ModelBundle(model_copy)  # the tflite is untouched, so its sha256 still matches
    assert bundle.counting.threshold == block["threshold"]
    assert bundle.counting.errors.sensitivity == block["sensitivity"]


def test_a_broken_counting_block_is_refused(model_copy):
    side = model_copy.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["counting"] = {"threshold": 0.9, "sensitivity": 0.1, "false_positive_rate": 0.3}
    side.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="counting block"):
        ModelBundle(model_copy)


def test_field_counting_writes_a_lower_review_threshold_beside_the_counting_one(model_copy):
    rng = np.random.default_rng(2)
    runs = [(rng.beta(1, 6, 3000), rng.beta(6, 1.5, 40)), (rng.beta(1.5, 6, 3000), rng.beta(5, 2, 40))]
    counting, review = write_field_counting(model_copy, runs, 0.01, 0.05, {"measured_on": "drawn scores"})
    assert review["threshold"] < counting["threshold"] and review["sensitivity"] > counting["sensitivity"]
    assert review["false_positive_rate"] <= 0.05 and review["max_false_positive_rate"] == 0.05 and review["runs"] == 2
    bundle = ModelBundle(model_copy)
    assert bundle.review.threshold == review["threshold"] and bundle.review.errors.sensitivity == review["sensitivity"]
    assert bundle.review.errors.sensitivity_sd == review["sensitivity_sd"]
    with pytest.raises(ValueError, match="review"):
        write_field_counting(model_copy, runs, 0.05, 0.01, {})
    # Counting measured afresh on NIH cells takes the real fields' review threshold away with the old counting block.
    x = rng.integers(0, 256, (200, 16, 16, 3), dtype=np.uint8)
    add_counting(model_copy, x, (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype(int), 0.02, "test cells")
    assert ModelBundle(model_copy).review is None and "review" not in json.loads(model_copy.with_suffix(".json").read_text())


def test_a_review_threshold_above_the_counting_one_is_refused(model_copy):
    side = model_copy.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["counting"] = {"threshold": 0.6, "sensitivity": 0.8, "false_positive_rate": 0.01}
    meta["review"] = {"threshold": 0.7, "sensitivity": 0.7, "false_positive_rate": 0.005}
    side.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="review block .*above the counting one"):
        ModelBundle(model_copy)
    del meta["counting"]  # a review block alone (no counting threshold to review below) is not used
    side.write_text(json.dumps(meta))
    assert ModelBundle(model_copy).review is None


def test_a_model_no_better_than_chance_gets_no_counting_block(model_copy):
    x = np.full((40, 16, 16, 3), 128, np.uint8)  # every cell alike: the model cannot tell them apart
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    assert add_counting(model_copy, x, y, 0.01, "test cells") is None
    assert "counting" not in json.loads(model_copy.with_suffix(".json").read_text())
    assert ModelBundle(model_copy).counting is None


def test_counting_fields_measures_the_pipeline_on_annotated_fields(tiny_model, tiny_detector, tmp_path):
    import json

    from click.testing import CliRunner
    from PIL import Image

    from quantization.cli import main
    from tests.conftest import BLUE, RED

    yy, xx = np.mgrid[0:256, 0:384]
    field = np.full((256, 384, 3), 235, np.uint8)
    objects = []
    for i, (cx, cy) in enumerate([(64, 64), (200, 72), (320, 180), (100, 190)]):
        field[(xx - cx) ** 2 + (yy - cy) ** 2 <= 28 ** 2] = RED if i == 0 else BLUE
        box = {"x": str(cx - 32), "y": str(cy - 32), "w": "64", "h": "64"}
        objects.append({"type": "ring" if i == 0 else "red blood cell", "bbox": box})
    (tmp_path / "images").mkdir()
    Image.fromarray(field).save(tmp_path / "images" / "F0001.png")
    (tmp_path / "annotations.json").write_text(json.dumps([{"image_name": "F0001.png", "objects": objects}]))
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_model.read_bytes())
    model.with_suffix(".json").write_text(tiny_model.with_suffix(".json").read_text())
    res = CliRunner().invoke(main, ["counting-fields", str(model), "--data", str(tmp_path), "--detector", str(tiny_detector)])
    assert res.exit_code == 0, res.output
    block = json.loads(model.with_suffix(".json").read_text())["counting"]
    # the red (infected) cell is found and called Parasitized; the three blue ones are the other detections
    assert block["infected_cells"] == 1 and block["healthy_cells"] == 3
    assert block["sensitivity"] == 1.0 and block["false_positive_rate"] == 0.0
    assert "1 real fields" in block["measured_on"] and block["detector_sha256"]
    review = json.loads(model.with_suffix(".json").read_text())["review"]
    assert review["threshold"] <= block["threshold"] and review["sensitivity"] == 1.0 and review["max_false_positive_rate"] == 0.05


def test_the_reviewed_figure_counts_the_infected_cells_shown_and_corrects_for_the_ones_below_the_threshold():
    from benchmarks.real_fields import reviewed
    from edge_app.model import Counting
    from edge_app.parasitemia import CountingErrors
    from training.fields import Box, CountedField

    boxes = [Box(100 * i, 0, 50, 50, "ring" if i < 4 else "red blood cell") for i in range(100)]
    # Detections on every box: the four infected ones score 0.9, 0.5, 0.3 and 0.1; healthy ones 0.4 (ten) or 0.05.
    p = np.array([0.9, 0.5, 0.3, 0.1] + [0.4] * 10 + [0.05] * 86)
    counted = [CountedField("f", np.array([[b.x, b.y, b.w, b.h] for b in boxes]), p, 0.1)]
    truth = 4 / 100
    r = reviewed(counted, {"f": boxes}, Counting(0.3, CountingErrors(0.75, 0.1, 400, 10000)))
    assert r["cells_shown"] == 13 and r["confirmed"] == 3  # shown: three infected cells and ten healthy ones at 0.4
    assert r["infected_shown"] == 0.75
    assert r["parasitemia"] == pytest.approx(3 / 100 / 0.75) == pytest.approx(truth)
    assert r["abs_relative_error"] == pytest.approx(0.0, abs=1e-9) and r["truth_inside_ci"]


def test_the_review_shows_every_white_cell_and_puts_back_an_infected_one_set_apart_as_one():
    from benchmarks.real_fields import reviewed
    from edge_app.model import Counting
    from edge_app.parasitemia import CountingErrors
    from training.fields import Box, CountedField, counting_scores, review_scores

    boxes = [Box(100 * i, 0, 50, 50, "schizont" if i < 2 else "red blood cell") for i in range(100)]
    # The first infected cell is set apart as a white cell (no red-cell detection); a real white cell lies on no box.
    red = np.array([[b.x, b.y, b.w, b.h] for b in boxes[1:]])
    p = np.array([0.9] + [0.05] * 98)
    white = np.array([[0, 0, 50, 50], [20000, 0, 60, 60]])
    counted = [CountedField("f", red, p, 0.1, white=white)]
    r = reviewed(counted, {"f": boxes}, Counting(0.5, CountingErrors(0.8, 0.05, 400, 10000), white_cells=True))
    assert (r["cells_shown"], r["white_cells_shown"], r["confirmed"], r["white_cells_parasitised"]) == (3, 2, 2, 1)
    assert r["parasitemia"] == pytest.approx(2 / 100 / 0.8)  # 99 red cells and the one put back

    healthy, infected = counting_scores(boxes, red, p)
    assert sorted(infected) == [0.0, 0.9]  # counting never sees the cell set apart
    healthy_r, infected_r = review_scores(boxes, red, p, white, REVIEW_SHOWS)
    assert sorted(infected_r) == [0.9, 1.0] and len(healthy_r) == len(healthy) + 1 and healthy_r.max() == 1.0


def test_the_review_threshold_is_chosen_on_scores_and_its_sensitivity_counts_the_cells_always_shown(model_copy):
    rng = np.random.default_rng(3)
    runs = [(rng.beta(1, 6, 3000), rng.beta(6, 1.5, 40)) for _ in range(2)]
    # 100 white or enlarged cells a run, always shown (at 1); 5 of them are infected cells that scored 0.01
    runs = [(h, np.r_[i[:-5], np.full(5, 0.01)]) for h, i in runs]
    shown = [(np.r_[h, np.ones(100)], np.r_[i[:-5], np.ones(5)]) for h, i in runs]
    counting, review = write_field_counting(model_copy, runs, 0.01, 0.05, {}, shown, REVIEW_SHOWS)
    alone = write_field_counting(model_copy, runs, 0.01, 0.05, {})
    assert counting == alone[0]  # counting is not affected
    # the threshold is where 5 % of the other detections score, the cells always shown on top of that share ...
    assert review["threshold"] == alone[1]["threshold"] and review["false_positive_rate"] == alone[1]["false_positive_rate"]
    # ... and the 10 infected cells among them count as found
    t = review["threshold"]
    assert review["sensitivity"] == pytest.approx(np.mean(np.concatenate([i for _, i in shown]) >= t))
    assert review["sensitivity"] - alone[1]["sensitivity"] == pytest.approx(10 / 80)
    # the block says what was shown whatever its score, so the app shows the same (edge_app.model.Counting)
    assert (review["enlarged_area"], review["white_cells"]) == (ENLARGED_AREA, True)
    assert "enlarged_area" not in alone[1] and ModelBundle(model_copy).review.enlarged_area is None
    write_field_counting(model_copy, runs, 0.01, 0.05, {}, shown, REVIEW_SHOWS)
    assert ModelBundle(model_copy).review.enlarged_area == ENLARGED_AREA and ModelBundle(model_copy).review.white_cells
    side = model_copy.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["review"]["enlarged_area"] = 0.5
    side.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="enlarged_area"):
        ModelBundle(model_copy)


def test_the_review_shows_enlarged_cells_whatever_their_score():
    from benchmarks.real_fields import reviewed
    from edge_app.model import Counting
    from edge_app.parasitemia import CountingErrors
    from training.fields import Box, CountedField, counting_scores, review_scores

    # a gametocyte (twice a red cell's area) scoring 0.1, a ring scoring 0.9, and 98 healthy cells scoring 0.05
    boxes = [Box(0, 0, 70, 70, "gametocyte"), Box(100, 0, 50, 50, "ring")] + [Box(100 * i, 0, 50, 50, "red blood cell")
                                                                             for i in range(2, 100)]
    detected = np.array([[b.x, b.y, b.w, b.h] for b in boxes], float)
    p = np.array([0.1, 0.9] + [0.05] * 98)
    field = [CountedField("f", detected, p, 0.1)]
    r = reviewed(field, {"f": boxes}, Counting(0.5, CountingErrors(0.8, 0.05, 400, 10000), ENLARGED_AREA))
    assert (r["cells_shown"], r["confirmed"]) == (2, 2)
    before = reviewed(field, {"f": boxes}, Counting(0.5, CountingErrors(0.8, 0.05, 400, 10000)))  # a block without them
    assert (before["cells_shown"], before["confirmed"]) == (1, 1)
    assert sorted(counting_scores(boxes, detected, p)[1]) == [0.1, 0.9]
    assert sorted(review_scores(boxes, detected, p, np.zeros((0, 4)), REVIEW_SHOWS)[1]) == [0.9, 1.0]


def test_the_review_scores_show_only_what_the_review_block_says(model_copy):
    from training.fields import Box, review_scores

    boxes = [Box(0, 0, 70, 70, "gametocyte"), Box(100, 0, 50, 50, "schizont")] + [Box(100 * i, 0, 50, 50, "red blood cell")
                                                                                  for i in range(2, 100)]
    detected = np.array([[b.x, b.y, b.w, b.h] for b in boxes[:1] + boxes[2:]], float)  # the schizont set apart as white
    p = np.array([0.1] + [0.05] * 98)
    white = np.array([[100, 0, 50, 50]])
    nothing = review_scores(boxes, detected, p, white, {"enlarged_area": None, "white_cells": False})
    assert sorted(nothing[1]) == [0.0, 0.1] and len(nothing[0]) == 98
    assert sorted(review_scores(boxes, detected, p, white, {"enlarged_area": None, "white_cells": True})[1]) == [0.1, 1.0]
    assert sorted(review_scores(boxes, detected, p, white, {"enlarged_area": 1.5, "white_cells": False})[1]) == [0.0, 1.0]
    runs = [(np.linspace(0, 0.5, 200), np.linspace(0.4, 1, 20))] * 2
    with pytest.raises(ValueError, match="go together"):
        write_field_counting(model_copy, runs, 0.01, 0.05, {}, runs)
