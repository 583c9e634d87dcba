"""The counting threshold and its error rates, and how smear counting uses them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_app.model import ModelBundle, ModelError
from quantization.counting import add_counting, counting_threshold


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


def test_a_model_no_better_than_chance_gets_no_counting_block(model_copy):
    x = np.full((40, 16, 16, 3), 128, np.uint8)  # every cell alike: the model cannot tell them apart
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    assert add_counting(model_copy, x, y, 0.01, "test cells") is None
    assert "counting" not in json.loads(model_copy.with_suffix(".json").read_text())
    assert ModelBundle(model_copy).counting is None
