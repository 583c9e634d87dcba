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
