"""One table for every model variant: size, accuracy kept, agreement with the float model, latency, load time, memory.

Latency and memory are measured in a fresh interpreter per model
(quantization.latency, which imports only the app, as on the Pi): the peak
RSS is then the app's and the model's, not this process's TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from training import metrics as M

THREADS = (1, 2, 4)


def measure_in_subprocess(path: str | Path, x: np.ndarray, threads: Sequence[int] = THREADS, repeats: int = 200, batch: int = 32) -> dict:
    """Latency, load time and peak RSS of one bundle, measured by quantization.latency in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        pixels = Path(tmp) / "pixels.npy"
        np.save(pixels, x[: max(batch, 64)])
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        res = subprocess.run([sys.executable, "-m", "quantization.latency", str(path), str(pixels),
                              ",".join(map(str, threads)), str(repeats), str(batch)],
                             capture_output=True, text=True, env=env, timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"latency measurement of {path} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def benchmark(tflite_paths: Sequence[str | Path], x: np.ndarray, y: np.ndarray, keras_model=None,
              threads: Sequence[int] = THREADS, repeats: int = 200, batch: int = 32, images: str = "test images") -> dict:
    """Score and time each bundle on (x, y); with `keras_model`, also the float reference and label agreement.

    The reference is scored with the first bundle's calibration (temperature
    and threshold), which all variants of one run share.
    """
    from quantization.score import bundle_probabilities

    rows = []
    for path in map(Path, tflite_paths):
        p, threshold = bundle_probabilities(path, x)
        temperature = float(json.loads(path.with_suffix(".json").read_text()).get("temperature", 1.0))
        rows.append({"model": path.name, "size_kb": path.stat().st_size / 1024, "temperature": temperature, "p": p,
                     **M.summary(y, p, threshold), **measure_in_subprocess(path, x, threads, repeats, batch)})
    if keras_model is not None and rows:
        from training.evaluate import predict_logits

        t0 = time.perf_counter()
        logits = predict_logits(keras_model, x)
        seconds = time.perf_counter() - t0
        p_ref = M.sigmoid(logits / rows[0]["temperature"])
        for row in rows:
            row["agreement"] = float(np.mean((p_ref >= row["threshold"]) == (row["p"] >= row["threshold"])))
        rows.insert(0, {"model": "keras float32 (reference)", "size_kb": None, "images_per_s_batched": len(x) / seconds,
                        **M.summary(y, p_ref, rows[0]["threshold"])})
    for row in rows:
        row.pop("p", None)
    return {"n": int(len(x)), "images": images, "threads": list(threads), "batch": batch, "rows": rows}


def markdown(result: dict) -> str:
    b = result["batch"]
    head = ["model", "size KiB", "accuracy", "sensitivity", "specificity", "ROC AUC", "agreement", "load ms"]
    for n in result["threads"]:
        head += [f"{n}t p50/p95 ms", f"{n}t batch{b} ms/img"]
    lines = [f"{result['n']} {result['images']}; latency per image, single image and batched ({b}).", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in result["rows"]:
        cells = [r["model"], "" if r.get("size_kb") is None else f"{r['size_kb']:.0f}",
                 f"{100 * r['accuracy']:.2f} %", f"{100 * r['sensitivity']:.2f} %", f"{100 * r['specificity']:.2f} %",
                 f"{r['roc_auc']:.4f}", f"{100 * r['agreement']:.2f} %" if "agreement" in r else "-",
                 f"{r['load_ms']:.0f}" if "load_ms" in r else "-"]
        for n in result["threads"]:
            lat = r.get("latency", {}).get(str(n))
            cells += [f"{lat['single']['p50_ms']:.2f}/{lat['single']['p95_ms']:.2f}", f"{lat[f'batch{b}']['p50_ms']:.3f}"] if lat else ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    mem = [f"{r['model']}: {r['peak_rss_mb']:.0f} MB" for r in result["rows"] if "peak_rss_mb" in r]
    if mem:
        lines += ["", "Peak RSS of a process that loads the model and runs it: " + "; ".join(mem) + "."]
    return "\n".join(lines) + "\n"
