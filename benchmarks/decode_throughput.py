"""Where `malaria-edge classify` spends its CPU on real cells: each decoding step, the decode stream, the main thread.

Usage (from the repo root, in the dev venv):
    python benchmarks/decode_throughput.py --data ../shared/datasets/malaria/cell_images --count 3000

Prints, for the same cells (read once first so they are in the page cache):
microseconds a cell of each preprocessing step on one thread; cells/s of
`decode_stream` for 1 and 2 threads, one and eight cells a task; and the CPU
a cell of the main thread's share (batched inference and the results file)
on already decoded pixels. Run it on a quiet machine and compare figures
from one run only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.peer_comparison import sample_images  # noqa: E402


def per_cell_us(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items) * 1e6


def steps(files: list[str], size: int, fit: str) -> dict[str, float]:
    """One thread, each step alone: what a cell costs before any parallelism."""
    from PIL import Image

    from edge_app.preprocess import fit_square, load_rgb, preprocess

    decoded = [load_rgb(f) for f in files]

    def header(path: str) -> None:
        with Image.open(path) as img:
            img.size

    return {
        "header_us": per_cell_us(header, files),
        "load_rgb_us": per_cell_us(load_rgb, files),
        "fit_square_us": per_cell_us(lambda img: fit_square(img, size, fit), decoded),
        "preprocess_us": per_cell_us(lambda f: preprocess(f, size, fit), files),
    }


def stream(files: list[str], size: int, fit: str) -> dict[str, float]:
    from edge_app.sources import decode_stream

    out = {}
    for workers in (1, 2):
        for chunk in (1, 8):
            start = time.perf_counter()
            n = sum(1 for _ in decode_stream(files, size, fit, workers=workers, chunk=chunk))
            out[f"workers{workers}_chunk{chunk}_cells_per_s"] = n / (time.perf_counter() - start)
    return out


def main_thread(model_path: str, items: list, threads: int) -> dict[str, float]:
    """The main thread's CPU a cell when decoding is free: batched inference and writing the rows of decoded `items`."""
    from edge_app.classify import classify_stream
    from edge_app.model import ModelBundle
    from edge_app.results import ResultWriter

    model = ModelBundle(model_path, threads=threads)
    model.predict(items[0].pixels[None])
    with tempfile.TemporaryDirectory() as tmp:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        with ResultWriter(str(Path(tmp) / "rows.csv"), "csv") as writer:
            classify_stream(model, iter(items), writer)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {f"interpreter_threads{threads}_cpu_us": cpu / len(items) * 1e6, f"interpreter_threads{threads}_cells_per_s": len(items) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/datasets/malaria/cell_images", help="an NIH-style folder")
    ap.add_argument("--model", default="models/malaria-edge-int8.tflite")
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    from edge_app.model import ModelBundle
    from edge_app.sources import decode_stream

    files = sample_images(Path(args.data), args.count, args.seed)
    if not files:
        raise SystemExit(f"no PNG cells under {args.data}/Parasitized or /Uninfected")
    for f in files:
        Path(f).read_bytes()
    model = ModelBundle(args.model)
    size, fit = model.input.size, model.fit
    items = list(decode_stream(files, size, fit))
    result = {"cells": len(files), "model": args.model, "steps_one_thread": steps(files, size, fit),
              "decode_stream": stream(files, size, fit),
              "main_thread": {**main_thread(args.model, items, 1), **main_thread(args.model, items, 2)}}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
