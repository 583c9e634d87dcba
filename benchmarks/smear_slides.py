"""Whole-slide counting on fields composed from real NIH cells of patients the model never saw.

Usage (from the repo root, in the dev venv):
    python benchmarks/smear_slides.py --slides 20 --json runs/smear-slides.json

Each slide gets a true parasitemia, and fields of 1640x1232 px (the Pi HQ
camera's 2x2-binned still) are composed from the test patients' cells of the
shipped model's split (seed 0, fold 0), apart and in touching pairs. The app's
own pipeline (`edge_app.smear.analyse_field`, with the shipped cell detector
unless `--detector classical`) counts them at the model's
counting threshold, and the parasitemia is corrected for the error rates in
the sidecar, as `malaria-edge smear` does. The estimate is compared with the
Wilson interval of the truth, and the time to segment and classify one
1640x1232 field is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.synthetic_fields import compose_field, match  # noqa: E402
from edge_app.detect import CellDetector, default_detector_path  # noqa: E402
from edge_app.labels import LABELS  # noqa: E402
from edge_app.model import ModelBundle, default_model_path  # noqa: E402
from edge_app.parasitemia import Parasitemia, wilson_interval  # noqa: E402
from edge_app.preprocess import load_rgb  # noqa: E402
from edge_app.smear import analyse_field  # noqa: E402
from training.data import discover, split_by_patient  # noqa: E402

FIELD = (1232, 1640)
PARASITEMIAS = (0.01, 0.02, 0.05, 0.10, 0.20)


def test_pool(data: str, seed: int, fold: int, scale: float) -> dict[str, list[np.ndarray]]:
    """The test patients' cells by label, decoded and scaled to the field's magnification."""
    samples = discover(data)
    test = set(split_by_patient(samples, seed=seed, test_fold=fold).test)
    pool = defaultdict(list)
    for s in samples:
        if s.patient in test:
            img = Image.fromarray(load_rgb(s.path))
            img = img.resize((max(8, round(img.width * scale)), max(8, round(img.height * scale))), Image.Resampling.BILINEAR)
            pool[LABELS[s.label]].append(np.asarray(img))
    return pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/malaria/cell_images")
    ap.add_argument("--model", default=None)
    ap.add_argument("--slides", type=int, default=20)
    ap.add_argument("--fields", type=int, default=10, help="fields per slide")
    ap.add_argument("--cells", type=int, default=170, help="cells offered per field (fewer fit in crowded fields)")
    ap.add_argument("--touching-pairs", type=int, default=10, help="touching pairs per field")
    ap.add_argument("--scale", type=float, default=0.5, help="cell image scale: NIH crops are about 130 px, Pi fields show them at about 65")
    ap.add_argument("--threshold", type=float, default=None, help="count at this threshold, uncorrected (default: the model's counting threshold, corrected)")
    ap.add_argument("--detector", default=None, help="cell detector bundle (default: the shipped one); 'classical' for OpenCV segmentation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    model = ModelBundle(args.model or default_model_path(), threads=args.threads)
    detector = None if args.detector == "classical" else CellDetector(args.detector or default_detector_path(), threads=args.threads)
    counting = model.counting if args.threshold is None else None
    threshold = counting.threshold if counting else (model.threshold if args.threshold is None else args.threshold)
    errors = counting.errors if counting else None
    pool = test_pool(args.data, 0, 0, args.scale)
    print(f"test patients' cells: {len(pool['Parasitized'])} Parasitized, {len(pool['Uninfected'])} Uninfected", file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    slides, field_seconds, recall, precision = [], [], [], []
    for s in range(args.slides):
        p_true = PARASITEMIAS[s % len(PARASITEMIAS)]
        n = args.fields * args.cells
        k = int(round(p_true * n))
        infected = rng.choice(len(pool["Parasitized"]), k, replace=False)
        healthy = rng.choice(len(pool["Uninfected"]), n - k, replace=False)
        cells = [(pool["Parasitized"][i], "Parasitized") for i in infected] + [(pool["Uninfected"][i], "Uninfected") for i in healthy]
        order = rng.permutation(len(cells))
        placed_n = placed_k = found_n = found_k = 0
        for f in range(args.fields):
            chunk = [cells[i] for i in order[f * args.cells:(f + 1) * args.cells]]
            field, truth = compose_field(chunk, FIELD, rng, touching_pairs=args.touching_pairs)
            t = time.perf_counter()
            results = analyse_field(model, field, threshold, detector)
            field_seconds.append(time.perf_counter() - t)
            hits = match([(r.cell.x, r.cell.y, r.cell.width, r.cell.height) for r in results], truth)
            recall.append(hits / len(truth))
            precision.append(hits / max(1, len(results)))
            placed_n += len(truth)
            placed_k += sum(c.label == "Parasitized" for c in truth)
            found_n += len(results)
            found_k += sum(r.label == "Parasitized" for r in results)
        lo, hi = wilson_interval(placed_k, placed_n)
        estimate = Parasitemia(found_n, found_k, errors=errors)
        elo, ehi = estimate.interval
        truth = placed_k / placed_n
        slide = {"slide": s, "true_cells": placed_n, "true_parasitized": placed_k, "true_parasitemia": truth,
                 "truth_ci95": [lo, hi], "counted_cells": found_n, "counted_parasitized": found_k,
                 "raw_parasitemia": estimate.raw_fraction, "estimated_parasitemia": estimate.fraction, "estimate_ci95": [elo, ehi],
                 "within_truth_ci": lo <= estimate.fraction <= hi, "truth_within_estimate_ci": elo <= truth <= ehi}
        slides.append(slide)
        print(f"slide {s + 1:2d}: truth {100 * truth:5.2f} % ({100 * lo:.2f}-{100 * hi:.2f}) of {placed_n}; "
              f"estimate {100 * estimate.fraction:5.2f} % (raw {100 * estimate.raw_fraction:5.2f} %) of {found_n}: "
              f"{'within' if slide['within_truth_ci'] else 'OUTSIDE'}", file=sys.stderr)
    result = {
        "model": model.name, "detector": "classical" if detector is None else detector.name, "threshold": threshold, "field": f"{FIELD[1]}x{FIELD[0]}", "scale": args.scale,
        "corrected_for": None if errors is None else {"sensitivity": errors.sensitivity, "false_positive_rate": errors.false_positive_rate},
        "slides_within_truth_ci": sum(s["within_truth_ci"] for s in slides), "slides": len(slides),
        "slides_truth_within_estimate_ci": sum(s["truth_within_estimate_ci"] for s in slides),
        "segmentation_recall_mean": float(np.mean(recall)), "segmentation_precision_mean": float(np.mean(precision)),
        "field_seconds_median": float(np.median(field_seconds)), "field_seconds_p95": float(np.percentile(field_seconds, 95)),
        "per_slide": slides,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "per_slide"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
