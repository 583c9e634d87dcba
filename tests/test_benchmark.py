import numpy as np

from quantization.benchmark import benchmark, markdown
from tests.conftest import TINY_SIZE


def test_benchmark_table_on_the_tiny_model(tiny_models, tiny_keras_model):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    x[:20, ..., 0] = 250  # red half: Parasitized by construction
    x[20:, ..., 2] = 250
    y = np.r_[np.ones(20, int), np.zeros(20, int)]
    result = benchmark([tiny_models["float32"], tiny_models["int8"]], x, y, tiny_keras_model, threads=(1, 2), repeats=10, batch=4)
    ref, f32, i8 = result["rows"]
    assert ref["model"].startswith("keras") and ref["accuracy"] == 1.0
    for row in (f32, i8):
        assert row["accuracy"] == 1.0 and row["agreement"] == 1.0 and row["roc_auc"] == 1.0
        assert row["size_kb"] > 0 and row["load_ms"] > 0
        assert 10 < row["peak_rss_mb"] < 200  # the measuring process's own, not this TensorFlow-laden parent's (carried across exec)
        assert row["heavy_modules"] == []  # measured like the app runs: no tensorflow, no scipy
        for n in ("1", "2"):
            lat = row["latency"][n]
            assert lat["single"]["p50_ms"] > 0 and lat["batch4"]["p50_ms"] > 0
    table = markdown(result)
    lat = i8["latency"]["2"]
    assert f"{lat['single']['p50_ms']:.2f}/{lat['single']['p95_ms']:.2f} | {lat['batch4']['p50_ms']:.3f}" in table
    assert "tiny-int8.tflite" in table and "2t batch4 ms/img" in table and "Peak RSS" in table
