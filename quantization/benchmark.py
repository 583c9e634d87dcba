"""One table for every model variant: size, accuracy kept, agreement with the float model, latency, load time, memory.

Latency and memory are measured in a fresh process per model (spawned, so
it imports only the app's runtime, as on the Pi): the peak RSS is then the
model's own, not this process's TensorFlow.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from training import metrics as M

THREADS = (1, 2, 4)


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def _measure(path: str, x: np.ndarray, threads: Sequence[int], repeats: int, batch: int, queue) -> None:
    """Child process: load time, per-image latency (single and batched) per thread count, peak RSS."""
    import resource

    from edge_app.model import ModelBundle

    out: dict = {"latency": {}}
    for n in threads:
        t0 = time.perf_counter()
        model = ModelBundle(path, threads=n)
        load = time.perf_counter() - t0
        out.setdefault("load_ms", load * 1000)
        model.predict(x[:1])  # warm-up
        single = []
        for i in range(repeats):
            t = time.perf_counter()
            model.predict(x[i % len(x):i % len(x) + 1])
            single.append(time.perf_counter() - t)
        xb = x[:batch] if len(x) >= batch else np.resize(x, (batch, *x.shape[1:]))
        model.predict(xb)
        batched = []
        for _ in range(max(3, repeats // batch)):
            t = time.perf_counter()
            model.predict(xb)
            batched.append((time.perf_counter() - t) / batch)
        out["latency"][str(n)] = {"single": _percentiles(single), f"batch{batch}": _percentiles(batched)}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(out)


def measure_in_subprocess(path: str | Path, x: np.ndarray, threads: Sequence[int] = THREADS, repeats: int = 200, batch: int = 32) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(str(path), x[: max(batch, 64)], tuple(threads), repeats, batch, queue))
    proc.start()
    result = queue.get(timeout=600)
    proc.join()
    return result


def benchmark(tflite_paths: Sequence[str | Path], x: np.ndarray, y: np.ndarray, keras_model=None,
              threads: Sequence[int] = THREADS, repeats: int = 200, batch: int = 32) -> dict:
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
    return {"n": int(len(x)), "threads": list(threads), "batch": batch, "rows": rows}


def markdown(result: dict) -> str:
    b = result["batch"]
    head = ["model", "size KiB", "accuracy", "sensitivity", "specificity", "ROC AUC", "agreement", "load ms"]
    for n in result["threads"]:
        head += [f"{n}t p50/p95 ms", f"{n}t batch{b} ms/img"]
    lines = [f"{result['n']} test images; latency per image, single image and batched ({b}).", "",
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
