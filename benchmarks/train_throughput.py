"""Training speed and size of candidate architectures, measured side by side in one run.

Usage (from the repo root, in the dev venv):
    python benchmarks/train_throughput.py mobilenetv2:0.35:64 mobilenetv2:0.35:96 mobilenetv2:0.5:64 baseline-cnn::64

Each candidate is ARCH:WIDTH:SIZE (WIDTH is ignored by architectures without
one). It prints the parameter count (about the int8 file's size in bytes) and
the images/s of training steps (batch 64, random pixels, no augmentation)
after a warm-up: the number that decides whether a recipe fits the one-hour
training budget on this CPU. Compare only figures from one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(arch: str, width: float, size: int, steps: int, batch: int) -> dict:
    import keras

    from training.model import build_model

    model = build_model(arch, size, width)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * steps, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 2, (batch * steps, 1)).astype(np.float32)
    model.fit(x[: batch * 3], y[: batch * 3], batch_size=batch, epochs=1, verbose=0)  # warm-up: tracing, allocation
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    keras.backend.clear_session()
    return {"candidate": f"{arch}:{width:g}:{size}", "params": int(model.count_params()), "train_images_per_s": batch * steps / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+", help="ARCH:WIDTH:SIZE, e.g. mobilenetv2:0.35:64")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    print("| candidate | parameters | training images/s | minutes per epoch of 10,809 cells |")
    print("| --- | --- | --- | --- |")
    for c in args.candidates:
        arch, width, size = c.split(":")
        r = measure(arch, float(width or 0.35), int(size), args.steps, args.batch)
        print(f"| {r['candidate']} | {r['params']:,} | {r['train_images_per_s']:.0f} | {10809 / r['train_images_per_s'] / 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()
