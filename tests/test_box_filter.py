"""The box filter: features of a field's candidate boxes, the model read from a sidecar, and what `detect` keeps with it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edge_app.box_filter import FEATURES, FLOOR, BoxFilter, box_features
from edge_app.detect import ALONE_MARGIN, STRIDE, CellDetector, Detection
from edge_app.model import ModelError, update_sidecar
from tests.conftest import FIXTURES

F = {name: i for i, name in enumerate(FEATURES)}


def _cells():
    return [Detection(100 + 100 * i, 100, 80, 80, 0.9) for i in range(5)]  # typical cells, 80 px


def test_features_say_how_much_of_a_cell_a_box_at_the_border_shows():
    sliver, half, whole_at_edge = Detection(0, 300, 20, 80, 0.6), Detection(0, 400, 40, 80, 0.6), Detection(0, 500, 80, 80, 0.6)
    x = box_features(_cells() + [sliver, half, whole_at_edge], 0.5, (960, 1280))
    assert np.allclose(x[:5, F["log_area"]], 0) and np.all(x[:5, F["at_border"]] == 0) and np.all(x[:5, F["shown"]] == 1)
    assert x[5:, F["at_border"]].tolist() == [1, 1, 1]
    assert x[5:, F["shown"]] == pytest.approx([0.25, 0.5, 1.0])
    assert x[5, F["elongation"]] == pytest.approx(np.log(4)) and x[5, F["score_at_border"]] == pytest.approx(0.6)


def test_features_say_how_much_of_a_box_a_stronger_one_already_covers():
    inside = Detection(110, 110, 40, 40, 0.4)  # within the first cell
    x = box_features(_cells() + [inside], 0.5, (960, 1280))
    assert x[-1, F["covered"]] == pytest.approx(1.0) and x[-1, F["overlap"]] == pytest.approx(1600 / 6400)
    assert x[0, F["covered"]] == 0  # nothing stronger covers the cell itself
    assert box_features([], 0.5, (960, 1280)).shape == (0, len(FEATURES))


def _filter(**weights) -> BoxFilter:
    """Standardised inputs left as they are (mean 0, scale 1), so a weight reads directly on a feature."""
    w = tuple(float(weights.get(name, 0.0)) for name in FEATURES)
    return BoxFilter((0.0,) * len(FEATURES), (1.0,) * len(FEATURES), w, float(weights.get("intercept", 0.0)), 0.5)


def test_the_filter_keeps_what_its_model_says_and_nothing_in_a_field_without_a_confident_box():
    sliver, weak_large = Detection(0, 300, 20, 80, 0.9), Detection(600, 300, 110, 110, 0.3)
    f = _filter(score=4, shown=6, log_area=4, intercept=-7)
    kept = f.keep(_cells() + [sliver, weak_large], 0.5, (960, 1280))
    assert kept == _cells() + [weak_large]  # the sliver at the border shows a quarter of a cell
    assert f.keep([weak_large], 0.5, (960, 1280)) == []


def test_a_filter_round_trips_through_a_sidecar_block_and_a_wrong_one_is_refused():
    f = _filter(score=2, intercept=-1)
    block = json.loads(json.dumps(f.to_meta("test")))
    assert BoxFilter.from_meta(block) == f
    for bad in ({"features": ["score"]}, {"cut": 1.5}, {"scale": [0.0] * len(FEATURES)}, {"weights": [float("nan")] * len(FEATURES)}):
        with pytest.raises((ValueError, KeyError)):
            BoxFilter.from_meta(block | bad)


@pytest.fixture
def detector_copy(tiny_detector, tmp_path):
    for suffix in (".tflite", ".json"):
        shutil.copy(tiny_detector.with_suffix(suffix), tmp_path / f"det{suffix}")
    return tmp_path / "det.tflite"


def test_a_detector_with_a_box_filter_decodes_down_to_its_floor_and_keeps_what_it_says(detector_copy, monkeypatch):
    t = CellDetector(detector_copy).threshold
    heat = np.zeros((30, 40), np.float32)
    box = np.zeros((30, 40, 4), np.float32)
    cells = {(5, 5): t + 0.2, (5, 15): t + 0.2, (5, 25): t + 0.2,  # confident
             (15, 5): (t - ALONE_MARGIN + FLOOR) / 2,  # weak, a typical cell: what no margin below the threshold reaches
             (15, 20): FLOOR / 2}  # under the floor: never a candidate
    for (y, x), score in cells.items():
        heat[y, x], box[y, x] = score, (5, 5, 0, 0)
    field = np.zeros((120, 160, 3), np.uint8)

    def found(path):
        detector = CellDetector(path)
        monkeypatch.setattr(detector, "raw", lambda rgb: (heat, box, 1.0))
        return {(round((d.y + d.height / 2) / STRIDE - 0.5), round((d.x + d.width / 2) / STRIDE - 0.5)) for d in detector.detect(field)}

    assert found(detector_copy) == {(5, 5), (5, 15), (5, 25)}  # no filter: the threshold, large cells and cells alone
    update_sidecar(detector_copy, "box_filter", _filter(intercept=1).to_meta("test"))  # keeps every candidate
    assert found(detector_copy) == {(5, 5), (5, 15), (5, 25), (15, 5)}
    between = (t + 0.2 + (t - ALONE_MARGIN + FLOOR) / 2) / 2
    update_sidecar(detector_copy, "box_filter", _filter(score=-1, intercept=between).to_meta("test"))  # keeps only weak ones
    assert found(detector_copy) == {(15, 5)}


def test_a_tampered_box_filter_block_is_a_clear_model_error(detector_copy):
    update_sidecar(detector_copy, "box_filter", _filter().to_meta("test") | {"features": ["score", "colour"]})
    with pytest.raises(ModelError, match="not a usable cell-detector sidecar.*box filter on features"):
        CellDetector(detector_copy)


def test_box_filter_command_fits_out_of_fold_and_writes_a_filter_the_app_uses(tiny_detector, tmp_path):
    """Two runs of generated fields, each with cells the annotator boxed and half-cells at the border nobody boxed: the
    filter is fitted on both runs' candidates as each run's own detector found them, and written into the sidecar."""
    pytest.importorskip("sklearn", reason="fitting needs the train extra")
    from click.testing import CliRunner
    from PIL import Image

    from tests.test_detect import _field_with_discs
    from training.cli import main

    data = tmp_path / "fields"
    (data / "images").mkdir(parents=True)
    entries = []
    for k, name in enumerate(("F0001.png", "F0002.png", "F0040.png", "F0041.png")):
        cells = [(80 + 110 * i, 90 + 8 * k) for i in range(3)] + [(120 + 110 * i, 190) for i in range(2)]
        cut = [(4, 60 + 20 * k), (380, 200 - 10 * k)]  # less than half a cell shows: not boxed
        Image.fromarray(_field_with_discs(cells + cut)).save(data / "images" / name)
        entries.append({"image_name": name, "objects": [
            {"type": "red blood cell", "bbox": {"x": str(x - 28), "y": str(y - 28), "w": "56", "h": "56"}} for x, y in cells]})
    (data / "annotations.json").write_text(json.dumps(entries))
    folds = tmp_path / "folds"
    for k in (0, 1):
        (folds / f"run{k}").mkdir(parents=True)
        for suffix in (".tflite", ".json"):
            shutil.copy(tiny_detector.with_suffix(suffix), folds / f"run{k}" / f"cell-detector-int8{suffix}")
    target = tmp_path / "ship"
    target.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(tiny_detector.with_suffix(suffix), target / f"cell-detector-int8{suffix}")

    res = CliRunner().invoke(main, ["box-filter", str(folds), str(data), "--write", str(target / "cell-detector-int8.tflite")])
    assert res.exit_code == 0, res.output
    detector = CellDetector(target / "cell-detector-int8.tflite")
    assert detector.box_filter is not None and "runs 0, 1" in detector.meta["box_filter"]["fitted_on"]
    field = np.asarray(Image.open(data / "images" / "F0040.png"))
    found = detector.detect(field)
    assert len(found) == 5 and all(d.x > 10 and d.x + d.width < 374 for d in found)  # the cells, not the cut ones
    assert len(detector.candidates(field)) > 5  # the cut ones were candidates

    classifier = tmp_path / "classifier"
    classifier.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(FIXTURES / f"tiny-int8{suffix}", classifier / f"tiny-int8{suffix}")
    wrong = CliRunner().invoke(main, ["box-filter", str(folds), str(data), "--write", str(classifier / "tiny-int8.tflite")])
    assert wrong.exit_code == 1 and "not a usable cell-detector sidecar" in wrong.output and "nothing was written" in wrong.output
    assert "box_filter" not in json.loads((classifier / "tiny-int8.json").read_text())
    missing = CliRunner().invoke(main, ["box-filter", str(tmp_path / "fields"), str(data), "--write", str(target / "cell-detector-int8.tflite")])
    assert missing.exit_code != 0 and "malaria-train detector --test-run 0" in missing.output
