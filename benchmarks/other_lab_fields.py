"""Count point-labelled fields from another laboratory with the app's own pipeline and score how many red cells it finds.

Usage (from the repo root, in the dev venv):
    python benchmarks/other_lab_fields.py                                   # ../shared/datasets/chula_rbc
    python benchmarks/other_lab_fields.py --data DIR --json runs/other-lab.json --per-field

DIR holds `images/` and `labels/`, a text file per labelled field named after
its image (`12.jpg` -> `12.txt`) with a line `x y class` per labelled red
cell, as in `../shared/datasets/chula_rbc` (another laboratory, camera, stain
and pixel scale than the detector's training fields, and no malaria).

Protocol:
- Each field is counted as `malaria-edge smear` counts it
  (training.fields.count_field): the shipped or given detector and
  classifier, white cells set apart, the field check's warnings.
- Found: a labelled point is found when a counted red cell's box holds it,
  one to one (training.fields.match_points). Found share = points found /
  points, pooled over the labelled fields. Labels need not cover every cell
  (some fields label only the unusual shapes), so boxes on no point are not
  scored as false detections.
- Empty: a field with at least `--min-points` labelled points in which no
  red cell was counted.
- Called Parasitized: counted cells at or above the model's counting
  threshold, over counted cells. On a laboratory without malaria every one
  is a false positive. The fields taken as one slide give the automatic
  parasitemia with its 95 % interval, as `smear` reports it.
- Seconds a field: finding and classifying the cells of a decoded field on
  the threads given (decoding the JPEG is not counted); median and p95.
- Field check: how many fields get each kind of warning (stain colour, cell
  size, focus, no cells), and how many none.
- Blocks: consecutive fields (training.fields.runs_of) are scored apart too.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.real_fields import write_report  # noqa: E402
from edge_app.detect import CellDetector, default_detector_path  # noqa: E402
from edge_app.model import ModelBundle, default_model_path  # noqa: E402
from edge_app.parasitemia import Parasitemia  # noqa: E402
from edge_app.preprocess import load_rgb  # noqa: E402
from edge_app.sources import IMAGE_SUFFIXES  # noqa: E402
from training.fields import CountedField, count_field, load_points, match_points, runs_of  # noqa: E402

#: The field check's verdicts, by the words its warnings begin with (edge_app.field_check.warnings).
VERDICTS = {"stain colour": "stain", "cells ": "cell size", "blurred": "focus", "no red cells": "no cells"}


def verdicts(counted: list[CountedField]) -> dict[str, int]:
    """How many fields the field check gave each kind of warning, and how many it passed."""
    out: Counter = Counter()
    for c in counted:
        kinds = {next((v for k, v in VERDICTS.items() if w.startswith(k)), "other") for w in c.warnings}
        out.update(kinds or {"passed"})
    return dict(sorted(out.items()))


def summarise(counted: list[CountedField], points: dict[str, np.ndarray], threshold: float, errors, min_points: int) -> dict:
    """Every figure of these fields taken as one slide (see the module docstring)."""
    labelled = [c for c in counted if Path(c.name).stem in points]
    n_points = sum(len(points[Path(c.name).stem]) for c in labelled)
    found = sum(match_points(points[Path(c.name).stem], c.boxes) for c in labelled)
    dense = [c for c in labelled if len(points[Path(c.name).stem]) >= min_points]
    cells = sum(len(c.boxes) for c in counted)
    called = sum(int((c.probabilities >= threshold).sum()) for c in counted)
    slide = Parasitemia(cells, called, min_cells=0, errors=errors)
    lo, hi = slide.interval
    seconds = [c.seconds for c in counted]
    return {
        "fields": len(counted), "labelled_fields": len(labelled), "points": n_points, "points_found": found,
        "found_share": found / n_points if n_points else None,
        f"fields_with_{min_points}_points": len(dense),
        "dense_fields_empty": sum(len(c.boxes) == 0 for c in dense),
        "empty_fields": [c.name for c in counted if len(c.boxes) == 0],
        "cells_counted": cells, "white_cells": sum(len(c.white) for c in counted),
        "called_parasitized": called, "called_parasitized_share": called / cells if cells else None,
        "parasitemia": slide.fraction, "ci95": [lo, hi],
        "seconds_per_field_median": float(np.median(seconds)) if seconds else None,
        "seconds_per_field_p95": float(np.percentile(seconds, 95)) if seconds else None,
        "field_check": verdicts(counted),
    }


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def print_summary(title: str, s: dict, min_points: int) -> None:
    print(f"{title}: {s['fields']} fields ({s['labelled_fields']} labelled, {s['points']} points)\n"
          f"  found {s['points_found']} of {s['points']} labelled cells ({_pct(s['found_share'])}); fields with "
          f"{min_points}+ points counted empty: {s['dense_fields_empty']} of {s[f'fields_with_{min_points}_points']}; "
          f"fields counted empty in all: {len(s['empty_fields'])}\n"
          f"  {s['cells_counted']} cells counted, {s['white_cells']} white cells set apart; called Parasitized "
          f"{s['called_parasitized']} ({_pct(s['called_parasitized_share'])}); as one slide {_pct(s['parasitemia'])} "
          f"(95 % CI {_pct(s['ci95'][0])}-{_pct(s['ci95'][1])})\n"
          f"  {s['seconds_per_field_median']:.3f} s a field (median; p95 {s['seconds_per_field_p95']:.3f}); field check: "
          + ", ".join(f"{k} {v}" for k, v in s["field_check"].items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/chula_rbc", help="folder with images/ and labels/")
    ap.add_argument("--model", default=None, help="cell classifier bundle (default: the shipped one)")
    ap.add_argument("--detector", default=None, help="cell detector bundle (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-points", type=int, default=20, help="a field with this many labelled points must not be empty")
    ap.add_argument("--per-field", action="store_true", help="print a line per field")
    ap.add_argument("--json", default=None, help="write every figure here")
    args = ap.parse_args(argv)

    data = Path(args.data)
    if not (data / "images").is_dir():
        ap.error(f"{data}/images: no such folder")
    points = load_points(data / "labels") if (data / "labels").is_dir() else {}
    names = [p.name for p in (data / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    model = ModelBundle(args.model or default_model_path(), threads=args.threads)
    detector = CellDetector(args.detector or default_detector_path(), threads=args.threads)
    counting = model.counting
    threshold = counting.threshold if counting else model.threshold
    errors = counting.errors if counting else None

    report = {"data": str(data), "model": str(model.path), "model_sha256": model.meta["tflite_sha256"],
              "detector": str(detector.path), "detector_sha256": detector.meta["tflite_sha256"], "threshold": threshold,
              "min_points": args.min_points, "blocks": {}, "fields": {}}
    counted_all = []
    for k, block in enumerate(runs_of(names)):
        counted = [count_field(model, detector, name, load_rgb(data / "images" / name)) for name in block]
        report["blocks"][str(k)] = summarise(counted, points, threshold, errors, args.min_points)
        print_summary(f"block {k} ({block[0]}-{block[-1]})", report["blocks"][str(k)], args.min_points)
        for c in counted:
            labels = points.get(Path(c.name).stem)
            found = None if labels is None else match_points(labels, c.boxes)
            report["fields"][c.name] = {"points": None if labels is None else len(labels), "found": found,
                                        "cells": len(c.boxes), "called_parasitized": int((c.probabilities >= threshold).sum()),
                                        "seconds": c.seconds, "warnings": list(c.warnings)}
            if args.per_field:
                print(f"    {c.name}: {len(c.boxes)} cells, {'-' if labels is None else f'{found}/{len(labels)} points found'}, "
                      f"{report['fields'][c.name]['called_parasitized']} called Parasitized, {c.seconds:.3f} s"
                      + "".join(f"; warned: {w}" for w in c.warnings))
        counted_all += counted
    report["all"] = summarise(counted_all, points, threshold, errors, args.min_points)
    print_summary("all fields as one slide", report["all"], args.min_points)
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
