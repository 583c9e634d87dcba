"""Cross-validate the smear pipeline over the three runs of real fields: nothing of a run is seen before it is scored.

Usage (from the repo root, in the dev venv), after training one detector per
held-out run (`malaria-train detector --test-run K --out runs/det-cv/runK`):
    python benchmarks/real_fields_cv.py --detectors runs/det-cv --json runs/real-fields-cv.json
    python benchmarks/real_fields_cv.py --detectors runs/det-cv --models runs/cls-cv   # one classifier per fold too

For each run K, run K's detector (trained on the other two runs) and run K's
classifier (`--models DIR`: DIR/runK/*.tflite, trained without run K's
cells; or one classifier for every fold, `--model`, default the shipped one)
count run K's fields. The smear-counting threshold for run K, and the error
rates its parasitemia is corrected for, are then chosen on the other two
runs as their own folds counted them (out-of-fold: every cell there was
counted by models that never saw it), for at most `--max-fpr` of the
detections that are not infected cells called Parasitized
(quantization.counting); so is its review threshold, for `--review-fpr`
(its sensitivity with the cells the review always shows, enlarged and
white cells, counted as shown).
Run K is scored as benchmarks/real_fields.py scores it (same protocol,
the reviewed parasitemia included), and its count is also corrected with
its own error rates at that threshold: an oracle, what perfectly
transferred rates would report. The headline is the mean over the three
folds, with the standard deviation beside it. `--write-counting MODEL`
stores both thresholds and their rates, pooled over all three runs'
out-of-fold counts, in MODEL's sidecar: the shipped classifier's, trained
on every run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.real_fields import (ORACLE, classifier_alone, print_summary, reviewed, score_counted, summarise,  # noqa: E402
                                    write_report)
from edge_app.detect import CellDetector  # noqa: E402
from edge_app.model import Counting, ModelBundle, counting_errors, default_model_path  # noqa: E402
from edge_app.parasitemia import CountingErrors  # noqa: E402
from edge_app.review import REVIEW_SHOWS  # noqa: E402
from quantization.counting import REVIEW_FPR, pooled_counting, pooled_review, write_field_counting  # noqa: E402
from training.fields import count_fields, counting_scores, load_annotations, review_scores, runs_of  # noqa: E402

HEADLINE = ("recall", "precision", "infected_recall", "healthy_called_parasitized", "reported_abs_relative_error")


def run_scores(counted: dict, annotations: dict) -> tuple[dict, dict]:
    """Each run's counted fields as the counting and the review thresholds are measured on them: (the P of every
    detection that is not an infected cell, each infected cell's best P), the review's with the cells it always shows
    at 1 (training.fields.counting_scores, review_scores)."""
    for_counting, for_review = {}, {}
    for k, fields in counted.items():
        for scores, of_field in ((for_counting, lambda c: counting_scores(annotations[c.name], c.boxes, c.probabilities)),
                                 (for_review, lambda c: review_scores(annotations[c.name], c.boxes, c.probabilities, c.white,
                                                                      REVIEW_SHOWS))):
            per_field = [of_field(c) for c in fields]
            scores[k] = (np.concatenate([h for h, _ in per_field]), np.concatenate([i for _, i in per_field]))
    return for_counting, for_review


def held_out_blocks(for_counting: dict, for_review: dict, k: int, max_fpr: float = 0.01,
                    review_fpr: float = REVIEW_FPR) -> tuple[dict, dict]:
    """Run k's counting and review blocks, measured on the other runs' out-of-fold scores (`run_scores`)."""
    others = [j for j in for_counting if j != k]
    block = pooled_counting([for_counting[j] for j in others], max_fpr)
    review = pooled_review([for_counting[j] for j in others], [for_review[j] for j in others], review_fpr)
    return block, review


def fold_classifier(models: str | Path, k: int) -> Path:
    """The classifier bundle trained without run k: the one .tflite in `models`/run{k}."""
    found = sorted((Path(models) / f"run{k}").glob("*.tflite"))
    if not found:
        raise SystemExit(f"no classifier for held-out run {k}: {Path(models) / f'run{k}'} holds no .tflite")
    return found[0]


def fold_blocks(counted: dict, annotations: dict, max_fpr: float = 0.01, review_fpr: float = REVIEW_FPR) -> dict:
    """For each run k of fields counted by models trained without it, the Counting of its counting and review
    thresholds, measured on the other runs (`held_out_blocks`)."""
    for_counting, for_review = run_scores(counted, annotations)
    out = {}
    for k in counted:
        block, review = held_out_blocks(for_counting, for_review, k, max_fpr, review_fpr)
        out[k] = (Counting(block["threshold"], counting_errors(block)),
                  Counting(review["threshold"], counting_errors(review), **REVIEW_SHOWS))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/iml_malaria")
    ap.add_argument("--detectors", required=True, help="folder with run0/, run1/, run2/, each holding cell-detector-int8.tflite")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--model", default=None, help="one classifier bundle for every fold (default: the shipped one)")
    group.add_argument("--models", default=None, help="folder with run0/, run1/, run2/, each holding one classifier bundle")
    ap.add_argument("--max-fpr", type=float, default=0.01, help="counting threshold: at most this share of other detections called Parasitized")
    ap.add_argument("--review-fpr", type=float, default=REVIEW_FPR,
                    help="review threshold: a reviewer is shown at most this share of the other detections")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-counting", default=None, metavar="MODEL",
                    help="store the threshold and rates pooled over every run's out-of-fold count in this classifier's sidecar")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    data = Path(args.data)
    annotations = load_annotations(data / "annotations.json")
    runs = runs_of(sorted(annotations))
    counted, models = {}, {}
    for k, held_out in enumerate(runs):
        path = fold_classifier(args.models, k) if args.models else Path(args.model or default_model_path())
        model = ModelBundle(path, threads=args.threads)
        detector = CellDetector(Path(args.detectors) / f"run{k}" / "cell-detector-int8.tflite", threads=args.threads)
        counted[k] = count_fields(model, detector, data, held_out)
        models[k] = model
        print(f"run {k}: counted {len(held_out)} fields with {path} and {detector.path}", file=sys.stderr)
    scores_for_counting, scores_for_review = run_scores(counted, annotations)

    report = {"protocol": "each run counted by models trained without it; its counting threshold and rates from the other "
                          "runs' out-of-fold counts", "max_fpr": args.max_fpr, "review_fpr": args.review_fpr, "folds": {}}
    for k, held_out in enumerate(runs):
        block, review_block = held_out_blocks(scores_for_counting, scores_for_review, k, args.max_fpr, args.review_fpr)
        errors = counting_errors(block) if block["sensitivity"] > block["false_positive_rate"] else None
        fold = summarise(score_counted(counted[k], annotations, block["threshold"]), counted[k], errors)
        fold["counting"] = block
        own_h, own_i = scores_for_counting[k]  # the held-out run's own rates at that threshold: an oracle no slide has
        own_se, own_fpr = float(np.mean(own_i >= block["threshold"])), float(np.mean(own_h >= block["threshold"]))
        fold["reported_with_own_rates"] = (CountingErrors(own_se, own_fpr).correct(fold["raw_parasitemia"])
                                           if own_se > own_fpr else None)
        fold["reviewed"] = reviewed(counted[k], annotations, Counting(review_block["threshold"], counting_errors(review_block),
                                                                      **REVIEW_SHOWS))
        fold["classifier_alone"] = classifier_alone(models[k], data, held_out, annotations,
                                                    {"0.5": 0.5, "counting": block["threshold"]})
        report["folds"][str(k)] = fold
        print(f"fold {k}: counting threshold {block['threshold']:.3f} from the other runs (sensitivity "
              f"{block['sensitivity']:.3f}, false positives {block['false_positive_rate']:.4f})")
        print_summary(f"  run {k} ({held_out[0]}-{held_out[-1]}), unseen", fold)
        if fold["reported_with_own_rates"] is not None:
            print(f"  corrected with run {k}'s own error rates at that threshold (oracle): "
                  f"{100 * fold['reported_with_own_rates']:.2f} % (true {100 * fold['true_parasitemia']:.2f} %)")
        alone = fold["classifier_alone"]
        print(f"  classifier alone on run {k}'s annotated cells: ROC AUC {alone['roc_auc']:.3f}; at the counting threshold "
              f"infected {100 * alone['at']['counting']['sensitivity']:.1f} %, healthy "
              f"{100 * alone['at']['counting']['healthy_called_parasitized']:.1f} % called Parasitized; at its own 1 % of "
              f"healthy cells (oracle) infected {100 * alone['at'][ORACLE]['sensitivity']:.1f} %")
    folds = list(report["folds"].values())
    report["mean"] = {key: float(np.mean([f[key] for f in folds])) for key in HEADLINE}
    report["sd"] = {key: float(np.std([f[key] for f in folds], ddof=1)) for key in HEADLINE}
    report["truth_inside_ci"] = sum(f["truth_inside_ci"] for f in folds)
    errors_reviewed = [f["reviewed"]["abs_relative_error"] for f in folds]
    report["reviewed"] = {"mean_abs_relative_error": float(np.mean(errors_reviewed)), "sd": float(np.std(errors_reviewed, ddof=1)),
                          "truth_inside_ci": sum(f["reviewed"]["truth_inside_ci"] for f in folds),
                          "cells_shown_per_field": float(np.mean([f["reviewed"]["cells_shown_per_field"] for f in folds]))}
    print("mean over folds (sd): " + ", ".join(f"{k} {report['mean'][k]:.3f} ({report['sd'][k]:.3f})" for k in HEADLINE)
          + f"; truth inside the reported interval in {report['truth_inside_ci']} of {len(folds)} runs")
    r = report["reviewed"]
    print(f"reviewed: parasitemia error {r['mean_abs_relative_error']:.3f} ({r['sd']:.3f}), truth inside the interval in "
          f"{r['truth_inside_ci']} of {len(folds)} runs, {r['cells_shown_per_field']:.1f} cells shown a field")
    if args.write_counting:
        counting, review = write_field_counting(
            args.write_counting, list(scores_for_counting.values()), args.max_fpr, args.review_fpr,
            {"measured_on": f"{sum(len(r) for r in runs)} real fields in {len(runs)} runs, each counted by a detector and "
                            "classifier trained without it (out-of-fold)"}, list(scores_for_review.values()), REVIEW_SHOWS)
        report["written_counting"], report["written_review"] = counting, review
        for name, block in (("counting", counting), ("review", review)):
            print(f"{args.write_counting}: " + (f"{name} threshold {block['threshold']:.4f}, sensitivity {block['sensitivity']:.3f}, "
                                                f"false-positive rate {block['false_positive_rate']:.4f}, out of fold" if block
                                                else f"no {name} block (rates no better than chance)"))
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
