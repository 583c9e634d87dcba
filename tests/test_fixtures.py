"""The committed tiny models are what tests/fixtures/build.py makes today: a converter or sidecar change cannot leave them stale."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_app.detect import CellDetector
from edge_app.model import ModelBundle
from tests.conftest import FIXTURES


def test_committed_tiny_models_match_a_fresh_build(tmp_path):
    pytest.importorskip("tensorflow")
    from tests.fixtures.build import DETECTOR_SHAPE, TINY_SIZE, build

    build(tmp_path)
    for name in ("tiny-int8", "tiny-detector"):
        fresh = json.loads((tmp_path / f"{name}.json").read_text())
        committed = json.loads((FIXTURES / f"{name}.json").read_text())
        fresh.pop("tflite_sha256"), committed.pop("tflite_sha256")
        assert fresh == committed, f"{name}: run `python -m tests.fixtures.build` and commit the result"
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (32, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    assert np.allclose(ModelBundle(tmp_path / "tiny-int8.tflite").predict(cells),
                       ModelBundle(FIXTURES / "tiny-int8.tflite").predict(cells), atol=1e-6)
    field = rng.integers(0, 256, (4 * DETECTOR_SHAPE[0], 4 * DETECTOR_SHAPE[1], 3), dtype=np.uint8)
    assert CellDetector(tmp_path / "tiny-detector.tflite").detect(field) == CellDetector(FIXTURES / "tiny-detector.tflite").detect(field)
