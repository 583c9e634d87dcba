"""What classifying a field's likely cells in all 8 orientations costs, against two views for every cell.

Usage (from the repo root, in the dev venv):
    python benchmarks/rescoring_cost.py --images '../shared/datasets/iml_malaria/images/*.JPG' --fields 20

The fields' cells are found once (by the shipped detector); then the same
cells are classified as `smear` classifies them (edge_app.smear.classify_cells:
two views for every cell, eight for those at or above RESCORE_FLOOR) and
with no cell rescored, alternately, `--repeats` times. Prints the median
seconds a field of each, their ratio, and the share of cells rescored. Run
it on a quiet machine (a Pi, to know what a field worker waits) and compare
figures from one run only.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import edge_app.smear as smear  # noqa: E402
from edge_app.detect import CellDetector, default_detector_path  # noqa: E402
from edge_app.model import ModelBundle, default_model_path  # noqa: E402
from edge_app.preprocess import load_rgb  # noqa: E402

#: A floor no probability reaches: every cell classified with two views only.
NONE = 2.0


@contextmanager
def rescoring_floor(floor: float) -> Iterator[None]:
    """classify_cells with another RESCORE_FLOOR (above 1: no cell rescored)."""
    shipped, smear.RESCORE_FLOOR = smear.RESCORE_FLOOR, floor
    try:
        yield
    finally:
        smear.RESCORE_FLOOR = shipped


def seconds_a_field(model: ModelBundle, fields: list[list], floor: float) -> float:
    """Median seconds to classify one field's cells with this rescoring floor."""
    times = []
    with rescoring_floor(floor):
        for cells in fields:
            start = time.perf_counter()
            smear.classify_cells(model, cells)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="../shared/datasets/iml_malaria/images/*.JPG", help="glob of field images")
    ap.add_argument("--fields", type=int, default=20, help="fields to time (the first, sorted by name)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    paths = sorted(glob.glob(args.images))[:args.fields]
    if not paths:
        ap.error(f"no images match {args.images}")
    model = ModelBundle(default_model_path(), threads=args.threads)
    detector = CellDetector(default_detector_path(), threads=args.threads)
    fields = [smear.find_field_cells(load_rgb(p), detector).red for p in paths]
    with rescoring_floor(NONE):
        p = np.concatenate([[r.probability for r in smear.classify_cells(model, cells)] for cells in fields])
    runs: dict[str, list[float]] = {"two_views": [], "shipped": []}
    for _ in range(args.repeats):
        runs["two_views"].append(seconds_a_field(model, fields, NONE))
        runs["shipped"].append(seconds_a_field(model, fields, smear.RESCORE_FLOOR))
    two, shipped = (float(np.median(v)) for v in runs.values())
    report = {"fields": len(paths), "cells": int(len(p)), "rescore_floor": smear.RESCORE_FLOOR,
              "cells_rescored": float(np.mean(p >= smear.RESCORE_FLOOR)), "two_views_s_a_field": two,
              "shipped_s_a_field": shipped, "ratio": shipped / two}
    print(f"{len(paths)} fields, {len(p)} cells, {100 * report['cells_rescored']:.0f} % at P >= {smear.RESCORE_FLOOR} "
          f"classified in 8 views: {shipped:.3f} s a field against {two:.3f} s with two views for all "
          f"({report['ratio']:.2f} times; classification only, median of {args.repeats} rounds)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
