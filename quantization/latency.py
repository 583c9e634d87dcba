"""Time one TFLite bundle in a clean process: `python -m quantization.latency MODEL PIXELS.npy THREADS REPEATS BATCH`.

Runs as its own interpreter importing only numpy and the app, as on the Pi,
so the peak RSS it reports is the app's and the model's, not TensorFlow's.
Prints one JSON object.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np

from edge_app.model import ModelBundle


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def peak_rss_mb() -> float:
    """This process's own peak RSS.

    Linux carries ru_maxrss across exec, so a process started by a parent
    holding TensorFlow would report the parent's gigabyte; VmHWM belongs to
    the exec'ed image alone. Elsewhere ru_maxrss is the best there is.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: str, x: np.ndarray, threads: list[int], repeats: int, batch: int) -> dict:
    """Load time, per-image latency (single and batched) per thread count, and peak RSS of this process."""
    out: dict = {"latency": {}}
    xb = np.resize(x, (batch, *x.shape[1:]))
    for n in threads:
        t0 = time.perf_counter()
        model = ModelBundle(path, threads=n)
        out.setdefault("load_ms", (time.perf_counter() - t0) * 1000)
        model.predict(x[:1])  # warm-up
        single = []
        for i in range(repeats):
            t = time.perf_counter()
            model.predict(x[i % len(x)][None])
            single.append(time.perf_counter() - t)
        model.predict(xb)
        batched = []
        for _ in range(max(3, repeats // batch)):
            t = time.perf_counter()
            model.predict(xb)
            batched.append((time.perf_counter() - t) / batch)
        out["latency"][str(n)] = {"single": _percentiles(single), f"batch{batch}": _percentiles(batched)}
    out["peak_rss_mb"] = peak_rss_mb()
    out["heavy_modules"] = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "sklearn", "scipy"})
    return out


if __name__ == "__main__":
    model_path, pixels, threads, repeats, batch = sys.argv[1:6]
    print(json.dumps(measure(model_path, np.load(pixels), [int(t) for t in threads.split(",")], int(repeats), int(batch))))
