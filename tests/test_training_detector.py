"""`malaria-train detector` end to end on a few generated annotated fields: trains, tunes, converts, and the app loads it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.test_detect import _field_with_discs


def _annotated_fields(root):
    (root / "images").mkdir(parents=True)
    entries = []
    for k, name in enumerate(("F0001.png", "F0002.png", "F0040.png")):  # two runs of frames: 1-2 and 40
        centres = [(70 + 120 * i + 10 * k, 70) for i in range(3)] + [(130 + 120 * i, 180 - 10 * k) for i in range(2)]
        Image.fromarray(_field_with_discs(centres)).save(root / "images" / name)
        entries.append({"image_name": name, "objects": [
            {"type": "red blood cell", "bbox": {"x": str(x - 28), "y": str(y - 28), "w": "56", "h": "56"}} for x, y in centres]})
    (root / "annotations.json").write_text(json.dumps(entries))
    return root


@pytest.fixture
def annotated(tmp_path):
    pytest.importorskip("tensorflow")
    return _annotated_fields(tmp_path)


def test_detector_command_trains_a_bundle_the_app_can_use(annotated, tmp_path):
    from edge_app.detect import CellDetector
    from training.cli import main

    out = tmp_path / "det"
    res = CliRunner().invoke(main, ["detector", str(annotated), "--out", str(out), "--test-run", "1", "--steps", "3",
                                    "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    detector = CellDetector(out / "cell-detector-int8.tflite")  # sha256, shapes and sidecar checked
    meta = detector.meta
    assert meta["training"]["fields"] == 2 and meta["training"]["held_out_fields"] == ["F0040.png", "F0040.png"]
    assert meta["training"]["config"]["steps"] == 3 and set(meta["field_ranges"]) == {"cell_colour", "cell_size", "sharpness"}
    assert 0 < detector.threshold < 1 and isinstance(detector.detect(np.full((256, 384, 3), 235, np.uint8)), list)
    assert json.loads((out / "config.json").read_text())["test_run"] == 1


def test_detector_command_trains_at_another_scale(annotated, tmp_path):
    """--scale sets the input the bundle is built for (a whole training field at that scale) and the scale its cell
    sizes are recorded in, so the app sizes and checks fields the same way."""
    from edge_app.detect import CellDetector
    from training.cli import main

    runs = {}
    for scale in (0.25, 0.5):
        out = tmp_path / f"det{scale}"
        res = CliRunner().invoke(main, ["detector", str(annotated), "--out", str(out), "--steps", "2", "--batch-size", "2",
                                        "--scale", str(scale), "--crop", "64"])
        assert res.exit_code == 0, res.output
        runs[scale] = CellDetector(out / "cell-detector-int8.tflite")
    assert runs[0.5].meta["input"]["shape"] == [480, 640, 3] and runs[0.5].scale == 0.5
    assert runs[0.25].meta["input"]["shape"] == [240, 320, 3]
    size = {s: d.meta["field_ranges"]["cell_size"]["max"] for s, d in runs.items()}
    assert size[0.5] == pytest.approx(2 * size[0.25])  # the same 56 px boxes, in each detector's input pixels
    assert runs[0.5].meta["training"]["config"]["crop"] == 64


def test_detector_command_refuses_a_folder_without_annotations(tmp_path):
    pytest.importorskip("tensorflow")
    from training.cli import main

    res = CliRunner().invoke(main, ["detector", str(tmp_path), "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "annotations.json" in res.output


def test_detector_threshold_retunes_a_bundle_on_the_fields_it_was_trained_on(tiny_detector, tmp_path):
    pytest.importorskip("scipy", reason="matching boxes needs the train extra")
    from edge_app.detect import CellDetector
    from training.cli import main

    data = _annotated_fields(tmp_path / "fields")
    det = tmp_path / "det.tflite"
    det.write_bytes(tiny_detector.read_bytes())
    meta = json.loads(tiny_detector.with_suffix(".json").read_text())
    meta["threshold"] = 0.95
    meta["training"] = {"held_out_run": 1}  # trained without frame 40
    det.with_suffix(".json").write_text(json.dumps(meta))
    res = CliRunner().invoke(main, ["detector-threshold", str(det), str(data)])
    assert res.exit_code == 0, res.output
    tuned = CellDetector(det)  # the sidecar still verifies against the model
    tuning = tuned.meta["tuning"]
    assert tuning["on"] == "2 annotated fields (F0001.png-F0002.png)"
    best = max(tuning["table"].values(), key=lambda row: row["f1"])
    assert tuned.threshold < 0.95 and tuning["table"][str(tuned.threshold)] == best and best["recall"] == 1.0
    assert "<- chosen" in res.output

    res = CliRunner().invoke(main, ["detector-threshold", str(det), str(data), "--exclude-run", "0"])
    assert res.exit_code == 0 and CellDetector(det).meta["tuning"]["on"] == "1 annotated fields (F0040.png-F0040.png)"
    res = CliRunner().invoke(main, ["detector-threshold", str(det), str(tmp_path)])
    assert res.exit_code == 2 and "annotations.json" in res.output
    (data / "images" / "F0040.png").write_bytes(b"not an image")
    before = det.with_suffix(".json").read_text()
    res = CliRunner().invoke(main, ["detector-threshold", str(det), str(data), "--exclude-run", "0"])
    assert res.exit_code == 1 and "F0040.png" in res.output and "nothing was written" in res.output
    assert det.with_suffix(".json").read_text() == before


def test_detector_command_widens_the_network(annotated, tmp_path):
    """--channels multiplies every layer's width: a wider network, trained and shipped the same way."""
    import keras

    from edge_app.detect import CellDetector
    from training.cli import main

    params = {}
    for channels in ("1", "2"):
        out = tmp_path / f"det{channels}"
        res = CliRunner().invoke(main, ["detector", str(annotated), "--out", str(out), "--steps", "2", "--batch-size", "2",
                                        "--channels", channels])
        assert res.exit_code == 0, res.output
        assert CellDetector(out / "cell-detector-int8.tflite").meta["training"]["config"]["channels"] == float(channels)
        params[channels] = keras.models.load_model(out / "model.keras").count_params()
    assert params["1"] < 100_000 and 3 < params["2"] / params["1"] < 4.5  # depthwise layers grow linearly, the rest as the square


def test_detector_threshold_says_a_box_filter_needs_refitting(tiny_detector, tmp_path):
    """A box filter's typical cell is set by the boxes at the threshold: re-tuning the threshold leaves it stale."""
    pytest.importorskip("scipy", reason="matching boxes needs the train extra")
    from edge_app.model import update_sidecar
    from tests.test_box_filter import _filter
    from training.cli import main

    data = _annotated_fields(tmp_path / "fields")
    det = tmp_path / "det.tflite"
    det.write_bytes(tiny_detector.read_bytes())
    det.with_suffix(".json").write_bytes(tiny_detector.with_suffix(".json").read_bytes())
    res = CliRunner().invoke(main, ["detector-threshold", str(det), str(data)])
    assert res.exit_code == 0 and "box-filter" not in res.output
    update_sidecar(det, "box_filter", _filter().to_meta("test"))
    res = CliRunner().invoke(main, ["detector-threshold", str(det), str(data)])
    assert res.exit_code == 0 and "refit it with malaria-train box-filter" in res.output
