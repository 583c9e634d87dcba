"""The peer comparison runs end to end on a tiny model, so the documented full run cannot rot unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import BLUE, RED, REPO, cell


def test_peer_comparison_times_both_pipelines_on_the_same_cells(tiny_keras_model, tiny_model, tmp_path):
    data = tmp_path / "cell_images"
    for label, color in (("Parasitized", RED), ("Uninfected", BLUE)):
        (data / label).mkdir(parents=True)
        for i in range(3):
            cell(color, seed=i).save(data / label / f"{i}.png")
    keras_model = tmp_path / "tiny.keras"
    tiny_keras_model.save(keras_model)
    out = tmp_path / "peer.json"

    done = subprocess.run([sys.executable, "benchmarks/peer_comparison.py", "--keras-model", str(keras_model),
                           "--model", str(tiny_model), "--data", str(data), "--count", "6", "--per-image", "3",
                           "--repeats", "1", "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["images"] == 6 and len(result["runs"]) == 1
    ours, peer = result["runs"][0]["malaria_edge"], result["runs"][0]["peer_keras"]
    # Ours really classified the six cells: the tiny model calls red Parasitized and blue Uninfected.
    assert "6 images" in ours["summary"] and "Parasitized: 3, Uninfected: 3" in ours["summary"]
    assert 0 < ours["cold_start_s"] and 0 < peer["cold_start_s"]
    assert ours["images_per_s_end_to_end"] > 0 and peer["batched_images_per_s"] > 0
    ratios = result["ratios"]
    assert ratios["speed_vs_peer_batched"]["median"] == pytest.approx(
        ours["images_per_s_end_to_end"] / peer["batched_images_per_s"])
