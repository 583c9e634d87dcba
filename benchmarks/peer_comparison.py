"""malaria-edge classify (int8 TFLite) against the peer Keras pipeline, on the same folder, in the same run.

Usage (from the repo root, in the dev venv):
    python benchmarks/peer_comparison.py --keras-model runs/mnv2/model.keras \
        --model models/malaria-edge-int8.tflite --data ../shared/datasets/malaria/cell_images --count 3000

Reports images/s, cold start (process start to first result) and peak RSS of
each, and their ratios. Our images/s comes twice: end to end from process
start, and from the first result to the last, which is timed like the peer's
batched figure (inside its process, after TensorFlow and the model have
loaded; decoding every image included). Both read the same list of real
cell images, from the page cache, in alternating runs (--repeats); figures
are medians with their range. Linux carries a process's peak RSS across exec, so each child's figure
is at least this harness's own (numpy only, printed as harness_peak_rss_mb).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def sample_images(data: Path, count: int, seed: int) -> list[str]:
    files = sorted(str(p) for d in ("Parasitized", "Uninfected") for p in (data / d).glob("*.png"))
    idx = np.random.default_rng(seed).choice(len(files), min(count, len(files)), replace=False)
    return [files[i] for i in sorted(idx)]


def run_timed(cmd: list[str], first_marker) -> dict:
    """Run cmd; time to the first stdout line matching first_marker and to the last line, total time, and the child's own peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = last = None
    lines = []
    for line in proc.stdout:
        last = time.perf_counter() - start
        if first is None and first_marker(line):
            first = last
        lines.append(line)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{cmd[:3]} failed:\n{stderr[-2000:]}")
    return {"first_result_s": first, "last_line_s": last, "total_s": total, "peak_rss_mb": usage.ru_maxrss / 1024, "stdout": lines, "stderr": stderr}


def once(edge_cmd: list[str], peer_cmd: list[str]) -> dict:
    """One run of each, ours first, with their figures and ratios."""
    ours = run_timed(edge_cmd, lambda line: not line.startswith("path,"))
    peer = run_timed(peer_cmd, lambda line: "first_result" in line)
    peer_done = json.loads(peer["stdout"][-1])
    rows = len(ours["stdout"]) - 1
    ours_rate = rows / ours["total_s"]
    # Like the peer's batched figure, which is timed inside its process after TensorFlow and the model have
    # loaded: decode and inference of every image, without interpreter start-up and imports.
    ours_running = (rows - 1) / (ours["last_line_s"] - ours["first_result_s"])
    result = {
        "malaria_edge": {"images_per_s_end_to_end": ours_rate, "images_per_s_after_first_result": ours_running,
                         "cold_start_s": ours["first_result_s"], "peak_rss_mb": ours["peak_rss_mb"],
                         "summary": ours["stderr"].strip().splitlines()[-1]},
        "peer_keras": {"per_image_predict_images_per_s": peer_done["per_image_predict_images_per_s"],
                       "batched_images_per_s": peer_done["batched_images_per_s"],
                       "batched_predict_only_images_per_s": peer_done["batched_predict_only_images_per_s"],
                       "cold_start_s": peer["first_result_s"], "peak_rss_mb": peer["peak_rss_mb"]},
    }
    result["ratios"] = {
        "speed_vs_peer_batched": ours_rate / peer_done["batched_images_per_s"],
        "speed_after_start_vs_peer_batched": ours_running / peer_done["batched_images_per_s"],
        "speed_vs_peer_per_image": ours_rate / peer_done["per_image_predict_images_per_s"],
        "cold_start_peer_over_ours": peer["first_result_s"] / ours["first_result_s"],
        "rss_peer_over_ours": peer["peak_rss_mb"] / ours["peak_rss_mb"],
    }
    return result


def spread(runs: list[dict]) -> dict:
    """Median, min and max of every figure over the runs: one run on a shared machine proves little."""
    out: dict = {}
    for side in ("malaria_edge", "peer_keras", "ratios"):
        out[side] = {}
        for key, value in runs[0][side].items():
            if isinstance(value, (int, float)):
                values = [r[side][key] for r in runs]
                out[side][key] = {"median": float(np.median(values)), "min": min(values), "max": max(values)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keras-model", required=True)
    ap.add_argument("--model", default="models/malaria-edge-int8.tflite")
    ap.add_argument("--data", default="../shared/datasets/malaria/cell_images")
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--per-image", type=int, default=300, help="images the peer classifies one model.predict at a time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each, alternating; figures are medians with their range")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    paths = sample_images(Path(args.data), args.count, args.seed)
    for p in paths:  # both read from the page cache: whichever ran first would otherwise pay for the disk
        Path(p).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cells"
        folder.mkdir()
        for i, p in enumerate(paths):
            os.symlink(os.path.abspath(p), folder / f"{i:06d}.png")
        listing = Path(tmp) / "list.txt"
        listing.write_text("".join(f"{folder / f'{i:06d}.png'}\n" for i in range(len(paths))))
        edge_cmd = [sys.executable, "-m", "edge_app.cli", "classify", str(folder), "--model", args.model, "--threads", str(args.threads)]
        peer_cmd = [sys.executable, str(HERE / "peer_keras_app.py"), args.keras_model, str(listing), str(args.per_image)]
        runs = []
        for i in range(args.repeats):
            runs.append(once(edge_cmd, peer_cmd))
            print(f"run {i + 1}/{args.repeats}: ours {runs[-1]['malaria_edge']['images_per_s_end_to_end']:.0f} images/s, "
                  f"peer batched {runs[-1]['peer_keras']['batched_images_per_s']:.0f}", file=sys.stderr, flush=True)
    result = {"images": len(paths), "repeats": args.repeats, "threads": args.threads,
              "harness_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **spread(runs), "runs": runs}
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
