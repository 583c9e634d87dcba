"""Cross-validate the smear pipeline over the three runs of real fields: tune on two runs, score the third.

Usage (from the repo root, in the dev venv), after training one detector per
held-out run (`malaria-train detector --test-run K --out runs/det-cv/runK`):
    python benchmarks/real_fields_cv.py --detectors runs/det-cv --json runs/real-fields-cv.json

For each run K: the classifier bundle (`--model`, default the shipped one;
`--models DIR` takes DIR/runK/*.tflite, a classifier trained without run K)
is copied, its smear-counting threshold and error rates are measured on the
other two runs' fields with run K's detector (`malaria-quantize
counting-fields`), and run K is counted and scored as
benchmarks/real_fields.py scores it (same protocol). Nothing of run K is
seen before it is scored. The headline is the mean over the three folds,
with the spread (standard deviation) beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.real_fields import classifier_alone, count_fields, print_summary, summarise  # noqa: E402
from edge_app.detect import CellDetector  # noqa: E402
from edge_app.model import ModelBundle, default_model_path  # noqa: E402
from quantization.counting import field_counting, field_scores, pooled_counting, write_counting  # noqa: E402
from training.fields import load_annotations, runs_of  # noqa: E402

HEADLINE = ("recall", "precision", "infected_recall", "healthy_called_parasitized", "reported_abs_relative_error")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/iml_malaria")
    ap.add_argument("--detectors", required=True, help="folder with run0/, run1/, run2/, each holding cell-detector-int8.tflite")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--model", default=None, help="one classifier bundle for every fold (default: the shipped one)")
    group.add_argument("--models", default=None, help="folder with run0/, run1/, run2/, each holding one classifier bundle")
    ap.add_argument("--max-fpr", type=float, default=0.01, help="counting threshold: at most this share of other detections called Parasitized")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-counting", default=None, metavar="MODEL",
                    help="write the counting threshold and rates measured on the held-out runs (pooled over folds) into "
                         "this classifier's sidecar: the shipped model's, when it was trained on every run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    data = Path(args.data)
    annotations = load_annotations(data / "annotations.json")
    runs = runs_of(sorted(annotations))
    report = {"protocol": "tune on two runs, score the third", "max_fpr": args.max_fpr, "folds": {}}
    held_out_scores = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, held_out in enumerate(runs):
            source = Path(args.model or default_model_path()) if not args.models else \
                next((Path(args.models) / f"run{k}").glob("*.tflite"))
            model_path = Path(tmp) / f"run{k}-{source.name}"
            shutil.copy(source, model_path)
            shutil.copy(source.with_suffix(".json"), model_path.with_suffix(".json"))
            detector = CellDetector(Path(args.detectors) / f"run{k}" / "cell-detector-int8.tflite", threads=args.threads)
            tune = [n for i, r in enumerate(runs) if i != k for n in r]
            block = field_counting(ModelBundle(model_path, threads=args.threads), detector, data, tune, args.max_fpr)
            write_counting(model_path, {**block, "max_false_positive_rate": args.max_fpr, "measured_on": f"runs other than {k}"})
            model = ModelBundle(model_path, threads=args.threads)
            threshold = model.counting.threshold if model.counting else model.threshold
            scores, seconds = count_fields(model, detector, data, held_out, annotations, threshold)
            fold = summarise(scores, seconds, model.counting.errors if model.counting else None)
            fold["counting"] = block
            held_out_scores.append(field_scores(model, detector, data, held_out))
            fold["classifier_alone"] = classifier_alone(model, data, held_out, annotations,
                                                        {"0.5": 0.5, "counting": threshold})
            report["folds"][str(k)] = fold
            print(f"fold {k}: counting threshold {threshold:.3f} tuned on the other runs (sensitivity "
                  f"{block['sensitivity']:.3f}, false positives {block['false_positive_rate']:.4f})")
            print_summary(f"  run {k} ({held_out[0]}-{held_out[-1]}), unseen", fold)
    folds = list(report["folds"].values())
    report["mean"] = {key: float(np.mean([f[key] for f in folds])) for key in HEADLINE}
    report["sd"] = {key: float(np.std([f[key] for f in folds], ddof=1)) for key in HEADLINE}
    report["truth_inside_ci"] = sum(f["truth_inside_ci"] for f in folds)
    print("mean over folds (sd): " + ", ".join(f"{k} {report['mean'][k]:.3f} ({report['sd'][k]:.3f})" for k in HEADLINE)
          + f"; truth inside the reported interval in {report['truth_inside_ci']} of {len(folds)} runs")
    if args.write_counting:
        block = pooled_counting(held_out_scores, args.max_fpr)
        written = write_counting(args.write_counting, {
            **block, "max_false_positive_rate": args.max_fpr,
            "measured_on": f"{len(folds)} runs of real fields ({sum(len(r) for r in runs)} fields), each counted by a "
                           "detector and classifier that never saw it (pooled out-of-fold predictions)"})
        report["written_counting"] = written
        print(f"{args.write_counting}: counting threshold {block['threshold']:.4f}, sensitivity {block['sensitivity']:.3f}, "
              f"false-positive rate {block['false_positive_rate']:.4f} (out of fold)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
