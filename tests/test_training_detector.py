"""`malaria-train detector` end to end on a few generated annotated fields: trains, tunes, converts, and the app loads it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.test_detect import _field_with_discs


@pytest.fixture
def annotated(tmp_path):
    pytest.importorskip("tensorflow")
    (tmp_path / "images").mkdir()
    entries = []
    rng = np.random.default_rng(0)
    for name in ("F0001.png", "F0002.png", "F0040.png"):  # two runs of frames: 1-2 and 40
        centres = [(int(x), int(y)) for x, y in rng.integers(40, [344, 216], (5, 2))]
        Image.fromarray(_field_with_discs(centres)).save(tmp_path / "images" / name)
        entries.append({"image_name": name, "objects": [
            {"type": "red blood cell", "bbox": {"x": str(x - 28), "y": str(y - 28), "w": "56", "h": "56"}} for x, y in centres]})
    (tmp_path / "annotations.json").write_text(json.dumps(entries))
    return tmp_path


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


def test_detector_command_refuses_a_folder_without_annotations(tmp_path):
    pytest.importorskip("tensorflow")
    from training.cli import main

    res = CliRunner().invoke(main, ["detector", str(tmp_path), "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "annotations.json" in res.output


def test_crops_around_an_infected_cell_always_hold_all_of_it():
    """The detector sees rare infected cells in a quarter of its crops, whole, at any magnification and orientation."""
    from training.detector import DetectorConfig, Field, sample

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (300, 400, 3), np.uint8)
    boxes = np.array([[5, 5, 30, 30], [360, 260, 35, 36], [200, 120, 28, 26]], np.float32)
    field = Field("F", rgb, boxes, np.array([False, True, False]))
    cfg = DetectorConfig(white_cell_share=0.0)  # a drawn white cell may hide the box
    for _ in range(200):
        img, out = sample(field, 96, rng, cfg, around=1)
        x, y, w, h = out[1]
        assert img.shape == (96, 96, 3)
        assert x >= -1e-3 and y >= -1e-3 and x + w <= 96 + 1e-3 and y + h <= 96 + 1e-3, out[1]
    anywhere = [sample(field, 96, rng, cfg)[1][1] for _ in range(200)]
    assert sum(0 <= b[0] and b[0] + b[2] <= 96 and 0 <= b[1] and b[1] + b[3] <= 96 for b in anywhere) < 100
