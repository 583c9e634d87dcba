"""How a laboratory's own reviews calibrate its automatic count: each run of annotated fields as a new laboratory.

Usage (from the repo root, in the dev venv):
    python benchmarks/site_calibration.py --data DIR --slide-fields 5 --reviewed-slides 3 --json OUT [--detectors runs/det-cv]

DIR holds `images/` and `annotations.json` as `../shared/datasets/iml_malaria`.
Each run of consecutive frames (training.fields.runs_of) is one laboratory;
its fields, in order, make slides of `--slide-fields` fields. The first
`--reviewed-slides` slides are reviewed by a reviewer who is always right,
shown what `serve` would show (every cell at or above the review threshold,
every enlarged cell and every white cell set apart; the spot checks left
out), and each adds its evidence to the laboratory's calibration
(edge_app.calibration). The run's remaining fields are then counted as one
slide, three ways:

- `uncalibrated`: corrected with the shipped (or out-of-fold) rates, as
  `smear` reports a slide at a laboratory with no reviews;
- `calibrated`: corrected with the laboratory's rates after the reviewed
  slides (the shipped ones their prior), when the remaining fields' stain
  matches the calibration's (`stain_matched`), else as uncalibrated;
- `reviewed`: the same fields reviewed as the first ones were (the figure
  to report once a microscopist has looked).

With `--detectors DIR` (DIR/run0, run1, ... each a detector trained without
that run), each run is counted by its own fold detector and the counting and
review rates are those measured on the other runs' out-of-fold counts
(benchmarks/real_fields_cv.py); without it, the shipped detector and the
rates in the shipped classifier's sidecar. With `--models DIR` as well
(DIR/runK/*.tflite, classifiers trained without run K, as
benchmarks/real_fields_cv.py takes them), each run's cells are classified
by its own. `calibrated_by_reviewed_slides`
gives the calibrated count of the same remaining fields after 0, 1, ...
reviewed slides. Shares are fractions, not percent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.real_fields import reviewed as reviewed_count  # noqa: E402
from benchmarks.real_fields import write_report  # noqa: E402
from benchmarks.real_fields_cv import fold_blocks, fold_classifier  # noqa: E402
from edge_app.calibration import Calibration, Evidence  # noqa: E402
from edge_app.detect import CellDetector, default_detector_path  # noqa: E402
from edge_app.field_check import field_stats  # noqa: E402
from edge_app.model import Counting, ModelBundle, default_model_path  # noqa: E402
from edge_app.parasitemia import Parasitemia  # noqa: E402
from edge_app.preprocess import load_rgb  # noqa: E402
from edge_app.review import REVIEW_SHOWS  # noqa: E402
from edge_app.smear import cells_in_boxes  # noqa: E402
from training.fields import (CountedField, count_fields, counting_scores, load_annotations, pooled, review_scores,  # noqa: E402
                             runs_of, score_field)


def figures(total: Parasitemia, truth: float, fields: int, slides_reviewed: int) -> dict:
    lo, hi = total.interval
    return {"slides_reviewed": slides_reviewed, "fields_counted": fields, "true_parasitemia": truth,
            "parasitemia": total.fraction, "ci95": [lo, hi],
            "abs_relative_error": abs(total.fraction - truth) / truth if truth else None,
            "truth_inside_ci": bool(lo <= truth <= hi)}


def slide_evidence(fields: list[CountedField], annotations: dict, counting: Counting, review: Counting,
                   stain: tuple[float, float, float] | None, name: str) -> Evidence:
    """What an always-right reviewer shown these fields as `serve` shows them would add to the calibration."""
    fp = flagged = found = found_flagged = 0
    for c in fields:
        others, infected = counting_scores(annotations[c.name], c.boxes, c.probabilities)
        _, shown = review_scores(annotations[c.name], c.boxes, c.probabilities, c.white, REVIEW_SHOWS)
        fp += int(np.sum(others >= counting.threshold))
        flagged += int(np.sum(c.probabilities >= counting.threshold))
        found += int(np.sum(shown >= review.threshold))
        found_flagged += int(np.sum((infected >= counting.threshold) & (shown >= review.threshold)))
    cells = sum(len(c.boxes) for c in fields)
    return Evidence(name, name, "benchmark", counting.threshold, cells, flagged, fp, found, found_flagged, stain)


def stain_of(data: Path, fields: list[CountedField], scale: float) -> tuple[float, float, float] | None:
    """These fields' cells' median colour, as the field check measures it for a slide (edge_app.calibration.slide_stain)."""
    colours = []
    for c in fields:
        rgb = load_rgb(data / "images" / c.name)
        stats = field_stats(rgb, cells_in_boxes(rgb, [tuple(int(v) for v in b) for b in c.boxes]), scale)
        if stats is not None:
            colours.append(stats.cell_colour)
    return tuple(float(v) for v in np.median(np.array(colours), axis=0)) if colours else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/iml_malaria", help="folder with images/ and annotations.json")
    ap.add_argument("--slide-fields", type=int, default=5, help="fields a slide")
    ap.add_argument("--reviewed-slides", type=int, default=3, help="slides each laboratory reviews before the count")
    ap.add_argument("--detectors", default=None, help="folder with run0/, run1/, ... fold detectors (default: the shipped one)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--model", default=None, help="cell classifier bundle (default: the shipped one)")
    group.add_argument("--models", default=None,
                       help="folder with run0/, run1/, ... each holding one classifier bundle trained without that run "
                            "(needs --detectors)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.models and not args.detectors:
        ap.error("--models needs --detectors: the rates of classifiers trained per run come from their out-of-fold counts")

    data = Path(args.data)
    annotations = load_annotations(data / "annotations.json")
    runs = runs_of(sorted(annotations))
    model = None if args.models else ModelBundle(args.model or default_model_path(), threads=args.threads)
    counted, detectors = {}, {}
    for k, names in enumerate(runs):
        path = Path(args.detectors) / f"run{k}" / "cell-detector-int8.tflite" if args.detectors else default_detector_path()
        detectors[k] = CellDetector(path, threads=args.threads)
        classifier = ModelBundle(fold_classifier(args.models, k), threads=args.threads) if args.models else model
        counted[k] = count_fields(classifier, detectors[k], data, names)
        print(f"run {k}: {len(names)} fields counted with {path} and {classifier.path}", file=sys.stderr)
    if args.detectors:
        blocks = fold_blocks(counted, annotations)
    else:
        if not (model.counting and model.review):
            ap.error(f"{model.path} has no counting and review blocks to correct with")
        blocks = {k: (model.counting, model.review) for k in counted}

    report = {"data": str(data), "slide_fields": args.slide_fields, "reviewed_slides": args.reviewed_slides,
              "detectors": args.detectors or str(default_detector_path()), "runs": {}}
    n_reviewed = args.slide_fields * args.reviewed_slides
    for k, fields in counted.items():
        counting, review = blocks[k]
        slides = [fields[i:i + args.slide_fields] for i in range(0, n_reviewed, args.slide_fields)]
        rest = fields[n_reviewed:]
        if not rest or len(slides) < args.reviewed_slides or len(slides[-1]) < args.slide_fields:
            print(f"run {k}: {len(fields)} fields, too few for {args.reviewed_slides} slides of {args.slide_fields} and a "
                  "count after them; left out", file=sys.stderr)
            continue
        scale = detectors[k].scale
        evidence = [slide_evidence(s, annotations, counting, review, stain_of(data, s, scale), f"run{k}-slide{i}")
                    for i, s in enumerate(slides)]
        rest_stain = stain_of(data, rest, scale)
        score = pooled([score_field(annotations[c.name], c.boxes, c.probabilities >= counting.threshold) for c in rest])
        truth = score.true_parasitemia
        cells, flagged = score.detections, score.called_parasitized
        uncalibrated = Parasitemia(cells, flagged, min_cells=0, errors=counting.errors)
        by_slides = []
        for r in range(len(evidence) + 1):
            calibration = Calibration(tuple(evidence[:r]), counting.errors, review.errors.sensitivity)
            matched = calibration.matches(rest_stain)
            errors = calibration.errors(len(rest)) if matched else counting.errors
            by_slides.append((figures(Parasitemia(cells, flagged, min_cells=0, errors=errors), truth, len(rest), r), matched,
                              calibration))
        calibrated, matched, calibration = by_slides[-1]
        rev = reviewed_count(rest, annotations, review)
        run = {"calibrated": {**calibrated, "stain_matched": matched, "calibration": calibration.describe()},
               "uncalibrated": figures(uncalibrated, truth, len(rest), 0),
               "reviewed": {**{key: rev[key] for key in ("parasitemia", "ci95", "abs_relative_error", "truth_inside_ci",
                                                         "cells_shown_per_field", "infected_shown")},
                            "slides_reviewed": args.reviewed_slides, "fields_counted": len(rest), "true_parasitemia": truth},
               "calibrated_by_reviewed_slides": [f for f, _, _ in by_slides]}
        report["runs"][str(k)] = run
        c, u, v = run["calibrated"], run["uncalibrated"], run["reviewed"]
        print(f"run {k}: {len(rest)} fields after {args.reviewed_slides} reviewed slides of {args.slide_fields}; true "
              f"{100 * truth:.2f} %\n"
              f"  uncalibrated {100 * u['parasitemia']:.2f} % (95 % CI {100 * u['ci95'][0]:.2f}-{100 * u['ci95'][1]:.2f} %)\n"
              f"  calibrated   {100 * c['parasitemia']:.2f} % (95 % CI {100 * c['ci95'][0]:.2f}-{100 * c['ci95'][1]:.2f} %)"
              f"{'' if matched else ' (stain unlike the calibration: shipped rates)'}; after "
              + ", ".join(f"{r}: {100 * f['parasitemia']:.2f} %" for r, (f, _, _) in enumerate(by_slides)) + " slides\n"
              f"  reviewed     {100 * v['parasitemia']:.2f} % (95 % CI {100 * v['ci95'][0]:.2f}-{100 * v['ci95'][1]:.2f} %), "
              f"{v['cells_shown_per_field']:.1f} cells shown a field, {100 * (v['infected_shown'] or 0):.0f} % of the infected")
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
