"""Count real, hand-annotated thin-smear fields with the app's own pipeline and score it against the boxes.

Usage (from the repo root, in the dev venv):
    python benchmarks/real_fields.py                      # every field of ../shared/datasets/iml_malaria
    python benchmarks/real_fields.py --run 2 --detector runs/det-cv/run2/cell-detector-int8.tflite
    python benchmarks/real_fields.py --json runs/real-fields.json --per-field

Protocol (training.fields, the one definition of it):
- `difficult` boxes count neither way; infected = ring, trophozoite,
  schizont, gametocyte; true parasitemia = infected boxes / other boxes.
- Red cells: detections and boxes matched one to one at IoU >= 0.5; recall
  = matched / boxes, precision = matched / detections (a lower bound: a few
  cells, mostly at the border, have no box).
- An infected box is found when a cell called Parasitized overlaps it at
  IoU >= 0.3; healthy cells called Parasitized = healthy boxes whose matched
  detection is called Parasitized, over healthy boxes matched. The two
  halves' faults apart: infected boxes no detection overlaps at IoU >= 0.3
  (the detector's), and cells called Parasitized that overlap no box at
  IoU >= 0.1 (white cells, smudges, debris, or unboxed cells).
- The fields, taken as one slide, are counted as `malaria-edge smear` counts
  them (the model's counting threshold and the correction it reports); the
  truth is inside when the true parasitemia lies in the reported 95 %
  interval. A field is positive when it has an infected box, called positive
  when a cell in it is called Parasitized.
- Reviewed (when the model has a review threshold): the slide's parasitemia
  after a microscopist who is always right has looked at every cell at or
  above the review threshold, every enlarged cell and every white cell set
  apart, as `malaria-edge serve` shows them: the infected boxes such a cell overlaps
  (IoU >= 0.3) are the confirmed parasites, over every detection and the
  white cells put back as parasitised, corrected for the sensitivity at
  that threshold (edge_app.review). The spot checks below it are left out.
- The classifier alone: every annotated cell cut out of its box the way the
  app cuts out a detected cell (edge_app.smear.cells_in_boxes), so that
  segmentation cannot be blamed; ROC AUC, and at each threshold the share
  of infected cells called Parasitized (per stage) and of healthy ones,
  also at the threshold that calls 1 % of those very healthy cells
  Parasitized (an oracle: what a perfectly transferred threshold would find).
- Field check: how many fields `smear` would warn about (stain colour, cell
  size or focus outside the detector's training fields' ranges); with a
  detector trained without the run, whether an unseen stain is flagged.
- Runs: consecutive camera frames (training.fields.runs_of), numbered 0, 1,
  2 in frame order; `--run K` scores run K alone (a cross-validation fold).
Seconds per field: finding and classifying the cells of a decoded field, on
the threads given (decoding the JPEG is not counted).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_app.detect import CellDetector, default_detector_path  # noqa: E402
from edge_app.field_check import STAIN_WARNING  # noqa: E402
from edge_app.model import Counting, ModelBundle, default_model_path  # noqa: E402
from edge_app.parasitemia import Parasitemia  # noqa: E402
from edge_app.preprocess import load_rgb  # noqa: E402
from edge_app.review import enlarged  # noqa: E402
from edge_app.smear import cells_in_boxes, classify_cells  # noqa: E402
from quantization.counting import counting_threshold  # noqa: E402
from training.fields import (DIFFICULT, INFECTED, CountedField, FieldScore, count_fields, load_annotations, pooled,  # noqa: E402
                             runs_of, score_field)

#: The label of the oracle threshold in classifier_alone's results.
ORACLE = "1 % of these healthy cells (oracle)"


def score_counted(counted: list[CountedField], annotations: dict, threshold: float) -> list[FieldScore]:
    """Each field's score with its cells called Parasitized at `threshold`."""
    return [score_field(annotations[c.name], c.boxes, c.probabilities >= threshold) for c in counted]


def classifier_alone(model: ModelBundle, data: Path, names: list[str], annotations: dict, thresholds: dict[str, float]) -> dict:
    """The classifier on the annotated cells themselves: segmentation cannot be blamed.

    Besides the thresholds given, it is scored at ORACLE: the threshold that
    calls 1 % of these very healthy cells Parasitized. No deployed threshold
    can know that, so it bounds what any threshold that transferred
    perfectly to these fields would find.
    """
    from sklearn.metrics import roc_auc_score

    kinds, probs = [], []
    for name in names:
        boxes = [b for b in annotations[name] if b.kind != DIFFICULT]
        rgb = load_rgb(data / "images" / name)
        cells = cells_in_boxes(rgb, [(b.x, b.y, b.w, b.h) for b in boxes])
        probs += [r.probability for r in classify_cells(model, cells, 0.5)]
        kinds += [b.kind for b in boxes]
    kinds, probs = np.array(kinds), np.array(probs)
    infected = np.isin(kinds, INFECTED)
    both = 0 < infected.sum() < len(infected)
    out = {"infected_cells": int(infected.sum()), "healthy_cells": int((~infected).sum()),
           "roc_auc": float(roc_auc_score(infected, probs)) if both else None, "at": {}}
    if both:
        thresholds = {**thresholds, ORACLE: counting_threshold(infected.astype(int), probs, 0.01)["threshold"]}
    for label, t in thresholds.items():
        called = probs >= t
        out["at"][label] = {
            "threshold": t,
            "sensitivity": float(called[infected].mean()) if infected.any() else None,
            "healthy_called_parasitized": float(called[~infected].mean()) if (~infected).any() else None,
            "stages": {k: float(called[kinds == k].mean()) for k in INFECTED if (kinds == k).any()},
        }
    return out


def reviewed(counted: list[CountedField], annotations: dict, review: Counting) -> dict:
    """The fields as one slide once every cell at or above the review threshold, and the enlarged and white cells the
    review block says, was shown to a reviewer who is always right: an infected box found only by a white cell's box
    is one the reviewer puts back into the count (edge_app.review)."""
    shown = [(c.probabilities >= review.threshold)
             | (enlarged(c.boxes[:, 2] * c.boxes[:, 3], review.enlarged_area) if review.enlarged_area else False)
             for c in counted]
    red = pooled([score_field(annotations[c.name], c.boxes, s) for c, s in zip(counted, shown)])
    white = [c.white if review.white_cells else np.zeros((0, 4)) for c in counted]
    p = pooled([score_field(annotations[c.name], np.vstack([c.boxes, w]), np.r_[s, np.ones(len(w), bool)])
                for c, s, w in zip(counted, shown, white)])
    put_back = p.infected_found - red.infected_found
    slide = Parasitemia(red.detections + put_back, p.infected_found, min_cells=0, errors=review.errors.after_review())
    lo, hi = slide.interval
    return {"threshold": review.threshold, "cells_shown": p.called_parasitized,
            "cells_shown_per_field": p.called_parasitized / len(counted) if counted else None,
            "white_cells_shown": sum(len(w) for w in white), "white_cells_parasitised": put_back,
            "confirmed": p.infected_found, "infected_shown": p.infected_found / p.infected if p.infected else None,
            "parasitemia": slide.fraction, "ci95": [lo, hi],
            "abs_relative_error": abs(slide.fraction - p.true_parasitemia) / p.true_parasitemia if p.true_parasitemia else None,
            "truth_inside_ci": bool(lo <= p.true_parasitemia <= hi)}


def summarise(scores: list[FieldScore], counted: list[CountedField], errors) -> dict:
    p = pooled(scores)
    seconds = [c.seconds for c in counted]
    slide = Parasitemia(p.detections, p.called_parasitized, min_cells=0, errors=errors)
    lo, hi = slide.interval
    positive = np.array([s.infected > 0 for s in scores])
    called = np.array([s.called_parasitized > 0 for s in scores])
    return {
        "fields": len(scores), "cells": p.cells, "infected": p.infected, "detections": p.detections,
        "recall": p.recall, "precision": p.precision,
        "infected_recall": p.infected_found / p.infected if p.infected else None,
        "infected_unboxed": p.infected_unboxed, "called_parasitized_off_boxes": p.called_off_boxes,
        "healthy_called_parasitized": p.healthy_called_parasitized / p.healthy_matched if p.healthy_matched else None,
        "true_parasitemia": p.true_parasitemia, "raw_parasitemia": slide.raw_fraction,
        "reported_parasitemia": slide.fraction, "reported_ci95": [lo, hi],
        "reported_relative_error": (slide.fraction - p.true_parasitemia) / p.true_parasitemia if p.true_parasitemia else None,
        "reported_abs_relative_error": abs(slide.fraction - p.true_parasitemia) / p.true_parasitemia if p.true_parasitemia else None,
        "truth_inside_ci": bool(lo <= p.true_parasitemia <= hi),
        "field_sensitivity": float(called[positive].mean()) if positive.any() else None,
        "field_specificity": float((~called[~positive]).mean()) if (~positive).any() else None,
        "seconds_per_field_median": float(np.median(seconds)) if seconds else None,
        "seconds_per_field_p95": float(np.percentile(seconds, 95)) if seconds else None,
        "fields_warned": sum(bool(c.warnings) for c in counted),
        "stain_warned": sum(any(w.startswith(STAIN_WARNING) for w in c.warnings) for c in counted),
    }


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def print_summary(title: str, s: dict) -> None:
    lo, hi = s["reported_ci95"]
    print(f"{title}: {s['fields']} fields, {s['cells']} annotated cells ({s['infected']} infected), {s['detections']} detections\n"
          f"  red cells: recall {s['recall']:.3f}, precision {s['precision']:.3f}\n"
          f"  infected cells called Parasitized {_pct(s['infected_recall'])}; healthy cells called Parasitized "
          f"{_pct(s['healthy_called_parasitized'])}\n"
          f"  infected cells the detector gave no box {s['infected_unboxed']}; cells called Parasitized on no box "
          f"{s['called_parasitized_off_boxes']}\n"
          f"  parasitemia: true {_pct(s['true_parasitemia'])}, raw {_pct(s['raw_parasitemia'])}, reported "
          f"{_pct(s['reported_parasitemia'])} (95 % CI {_pct(lo)}-{_pct(hi)}); truth inside: {s['truth_inside_ci']}; "
          f"relative error {_pct(s['reported_relative_error'])}\n"
          f"  fields: sensitivity {_pct(s['field_sensitivity'])}, specificity {_pct(s['field_specificity'])}; "
          f"{s['seconds_per_field_median']:.3f} s a field (median; p95 {s['seconds_per_field_p95']:.3f})\n"
          f"  fields the field check warned about: {s['fields_warned']} of {s['fields']} ({s['stain_warned']} for their stain colour)")
    if s.get("reviewed"):
        r = s["reviewed"]
        print(f"  reviewed (every cell at P >= {r['threshold']:.3f}, enlarged or white shown, {r['cells_shown_per_field']:.1f} "
              f"a field, {_pct(r['infected_shown'])} of the infected cells among them, {r['white_cells_parasitised']} of "
              f"{r['white_cells_shown']} white cells put back as parasitised): "
              f"{_pct(r['parasitemia'])} (95 % CI {_pct(r['ci95'][0])}-{_pct(r['ci95'][1])}); truth inside: "
              f"{r['truth_inside_ci']}; error {_pct(r['abs_relative_error'])}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/iml_malaria", help="folder with images/ and annotations.json")
    ap.add_argument("--model", default=None, help="cell classifier bundle (default: the shipped one)")
    ap.add_argument("--detector", default=None, help="cell detector bundle (default: the shipped one); 'classical' for OpenCV segmentation")
    ap.add_argument("--run", type=int, action="append", help="score only this run (0, 1, 2 in frame order); repeatable")
    ap.add_argument("--threshold", type=float, default=None, help="count at this threshold (default: the model's counting threshold)")
    ap.add_argument("--first", type=int, default=None, help="only the first N fields of each run (a quick look)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-field", action="store_true", help="print a line per field")
    ap.add_argument("--no-classifier-alone", action="store_true", help="skip scoring the classifier on the annotated cells")
    ap.add_argument("--json", default=None, help="write every figure here")
    args = ap.parse_args(argv)

    data = Path(args.data)
    annotations = load_annotations(data / "annotations.json")
    runs = runs_of(sorted(annotations))
    chosen = args.run if args.run else list(range(len(runs)))
    model = ModelBundle(args.model or default_model_path(), threads=args.threads)
    detector = None if args.detector == "classical" else CellDetector(args.detector or default_detector_path(), threads=args.threads)
    counting = model.counting if args.threshold is None else None
    threshold = counting.threshold if counting else (model.threshold if args.threshold is None else args.threshold)
    errors = counting.errors if counting else None
    review = model.review if counting else None

    report = {"data": str(data), "model": str(model.path), "model_sha256": model.meta["tflite_sha256"],
              "detector": "classical" if detector is None else str(detector.path),
              "detector_sha256": None if detector is None else detector.meta["tflite_sha256"],
              "threshold": threshold, "runs": {}, "fields": {}}
    all_scores, all_counted, all_names = [], [], []
    for k in chosen:
        names = runs[k][:args.first]
        counted = count_fields(model, detector, data, names)
        scores = score_counted(counted, annotations, threshold)
        report["runs"][str(k)] = summarise(scores, counted, errors)
        if review:
            report["runs"][str(k)]["reviewed"] = reviewed(counted, annotations, review)
        print_summary(f"run {k} ({names[0]}-{names[-1]})", report["runs"][str(k)])
        for s, c in zip(scores, counted):
            report["fields"][c.name] = {**{f: getattr(s, f) for f in FieldScore.__dataclass_fields__}, "seconds": c.seconds,
                                        "warnings": list(c.warnings)}
            if args.per_field:
                print(f"    {c.name}: {s.cells} cells, {s.detections} found, recall {s.recall:.3f}, precision {s.precision:.3f}, "
                      f"infected {s.infected_found}/{s.infected}, healthy called Parasitized {s.healthy_called_parasitized}, "
                      f"true {_pct(s.true_parasitemia)}, raw {_pct(s.raw_parasitemia)}, {c.seconds:.3f} s"
                      + "".join(f"; warned: {w}" for w in c.warnings))
        all_scores += scores
        all_counted += counted
        all_names += names
    if len(chosen) > 1:
        report["pooled"] = summarise(all_scores, all_counted, errors)
        if review:
            report["pooled"]["reviewed"] = reviewed(all_counted, annotations, review)
        print_summary("all chosen runs as one slide", report["pooled"])
        folds = [report["runs"][str(k)] for k in chosen]
        report["mean_over_runs"] = {key: float(np.mean([f[key] for f in folds])) for key in
                                    ("recall", "precision", "infected_recall", "healthy_called_parasitized",
                                     "reported_abs_relative_error") if all(f[key] is not None for f in folds)}
        print("mean over runs: " + ", ".join(f"{k} {v:.3f}" for k, v in report["mean_over_runs"].items()))
    if not args.no_classifier_alone:
        thresholds = {"0.5": 0.5, "screening": model.threshold, "counting": threshold}
        alone = classifier_alone(model, data, all_names, annotations, thresholds)
        report["classifier_alone"] = alone
        print(f"classifier alone on {alone['infected_cells']} infected and {alone['healthy_cells']} healthy annotated cells: "
              f"ROC AUC {alone['roc_auc']:.3f}")
        for label, a in alone["at"].items():
            stages = ", ".join(f"{k} {_pct(v)}" for k, v in a["stages"].items())
            print(f"  at {label} ({a['threshold']:.3f}): infected called Parasitized {_pct(a['sensitivity'])} ({stages}); "
                  f"healthy called Parasitized {_pct(a['healthy_called_parasitized'])}")
    write_report(args.json, report)
    return 0


def write_report(path: str | None, report: dict) -> None:
    """Every figure as JSON, for the model card's tables; nothing when no path was given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
