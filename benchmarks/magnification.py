"""How well the cell detector finds the red cells of real fields photographed at another magnification.

Usage (from the repo root, in the dev venv; the fold detectors as for
benchmarks/real_fields_cv.py):
    python benchmarks/magnification.py --detectors runs/det-cv --frames 1920x1080,2560x1440 --json runs/magnification.json

Another objective or camera puts more or fewer pixels on a red cell than the
training fields' 80 px. There are no such annotated fields, so they are made
from the real ones, annotations and all: at zoom Z > 1 the middle 1/Z of
each field is enlarged back to its size (cells Z times larger, fewer of
them); at Z < 1 the fields of a run, 1/Z by 1/Z of them in a row, are shrunk
and tiled into one field of the same size (cells Z times smaller, more of
them; the seams cut the cells on them, as a field's border does). Each run
K is found by the detector trained without it (DIR/runK), once at its
default scale only (`passes=1`, as before it followed the magnification)
and once as the app runs it, and scored by the real-field protocol
(training.fields: red cells matched one to one at IoU >= 0.5, difficult
boxes count neither way; an infected box is boxed when a detection overlaps
it at IoU >= 0.3). `--frames WxH,...` puts each field, unscaled, in the
middle of a larger frame of its background colour instead: a camera with a
larger frame at the same magnification, whose frame the app shrinks into
the detector's input (cells smaller there). Prints recall, precision,
infected cells boxed and seconds a field (median, finding only) per zoom
or frame, default scale against followed, mean over the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_app.detect import MAX_PASSES, CellDetector, background_colour  # noqa: E402
from edge_app.model import ModelBundle, default_model_path  # noqa: E402
from edge_app.preprocess import load_rgb  # noqa: E402
from training.fields import Box, count_field, load_annotations, pooled, runs_of, score_field  # noqa: E402


def zoomed_fields(data: Path, names: list[str], annotations: dict, zoom: float):
    """(name, field, its boxes) for these fields as photographed at `zoom` times the magnification (see above)."""
    if zoom >= 1:
        for name in names:
            rgb = load_rgb(data / "images" / name)
            h, w = rgb.shape[:2]
            cw, ch = round(w / zoom), round(h / zoom)
            x0, y0 = (w - cw) // 2, (h - ch) // 2
            field = cv2.resize(rgb[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
            yield name, field, [Box((bx0 - x0) * zoom, (by0 - y0) * zoom, (bx1 - bx0) * zoom, (by1 - by0) * zoom, b.kind)
                                for b in annotations[name]
                                for bx0, by0, bx1, by1 in [(max(b.x, x0), max(b.y, y0), min(b.x + b.w, x0 + cw), min(b.y + b.h, y0 + ch))]
                                if bx1 > bx0 and by1 > by0 and (bx1 - bx0) * (by1 - by0) >= 0.5 * b.w * b.h]
        return
    m = round(1 / zoom)
    for i in range(0, len(names) - m * m + 1, m * m):
        group, field, boxes = names[i:i + m * m], None, []
        for j, name in enumerate(group):
            rgb = load_rgb(data / "images" / name)
            h, w = rgb.shape[:2]
            field = np.zeros_like(rgb) if field is None else field
            tw, th = w // m, h // m
            ox, oy = (j % m) * tw, (j // m) * th
            field[oy:oy + th, ox:ox + tw] = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
            boxes += [Box(ox + b.x * tw / w, oy + b.y * th / h, b.w * tw / w, b.h * th / h, b.kind) for b in annotations[name]]
        yield "+".join(group), field, boxes


def framed_fields(data: Path, names: list[str], annotations: dict, frame: tuple[int, int]):
    """(name, field, its boxes) for these fields as a camera with a larger frame at the same magnification would take
    them: each in the middle of a `frame` (width, height) of its own background colour, the cells as many pixels
    across as before (the app shrinks the whole frame into the detector's input, so they come out smaller there)."""
    for name in names:
        rgb = load_rgb(data / "images" / name)
        h, w = rgb.shape[:2]
        width, height = frame
        if width < w or height < h:
            raise ValueError(f"frame {width}x{height} is smaller than the fields ({w}x{h})")
        field = np.empty((height, width, 3), np.uint8)
        field[:] = background_colour(rgb)
        ox, oy = (width - w) // 2, (height - h) // 2
        field[oy:oy + h, ox:ox + w] = rgb
        yield name, field, [Box(b.x + ox, b.y + oy, b.w, b.h, b.kind) for b in annotations[name]]


def score_zoom(detectors: list[CellDetector], runs: list[list[str]], data: Path, annotations: dict, zoom: float | tuple[int, int],
               passes: int, model: ModelBundle | None = None) -> dict:
    """Each held-out run's fields at `zoom` (or in a larger frame, `framed_fields`, when it is a (width, height)) found
    by its own fold detector with this many passes, scored; with `model`, also counted as `smear` counts them
    (training.fields.count_fields) and its calls at the model's counting threshold scored."""
    per_run = []
    for detector, names in zip(detectors, runs):
        found_scores, call_scores, seconds = [], [], []
        fields = framed_fields if isinstance(zoom, tuple) else zoomed_fields
        for name, field, truth in fields(data, names, annotations, zoom):
            start = time.perf_counter()
            found = detector.detect(field, passes=passes)
            seconds.append(time.perf_counter() - start)
            boxes = np.array([[d.x, d.y, d.width, d.height] for d in found], float).reshape(-1, 4)
            found_scores.append(score_field(truth, boxes, np.ones(len(boxes), bool)))
            if model is not None:
                counted = count_field(model, detector, name, field)
                call_scores.append(score_field(truth, counted.boxes, counted.probabilities >= model.counting.threshold))
        p = pooled(found_scores)
        run = {"fields": len(found_scores), "recall": p.matched / p.cells, "precision": p.matched / max(p.detections, 1),
               "infected_boxed": p.infected_found / max(p.infected, 1), "seconds_per_field": float(np.median(seconds))}
        if call_scores:
            c = pooled(call_scores)
            run |= {"infected_called_parasitized": c.infected_found / max(c.infected, 1),
                    "healthy_called_parasitized": c.healthy_called_parasitized / max(c.healthy_matched, 1),
                    "raw_parasitemia": c.called_parasitized / max(c.detections, 1), "true_parasitemia": c.infected / c.cells}
        per_run.append(run)
    return {"runs": per_run, **{k: float(np.mean([r[k] for r in per_run])) for k in per_run[0] if k != "fields"}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/datasets/iml_malaria")
    ap.add_argument("--detectors", default="runs/det-cv", help="folder with run0/, run1/, run2/, each a detector bundle")
    ap.add_argument("--zooms", default="0.5,1,2,3", help="magnifications against the training fields', comma-separated")
    ap.add_argument("--frames", default="", help="larger camera frames at the same magnification, e.g. 1920x1080,2560x1440")
    ap.add_argument("--model", default=None, help="classifier bundle whose counting threshold the calls are scored at "
                    "(default: the shipped one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    data = Path(args.data)
    annotations = load_annotations(data / "annotations.json")
    runs = runs_of(sorted(annotations))
    detectors = [CellDetector(Path(args.detectors) / f"run{k}" / "cell-detector-int8.tflite", threads=args.threads)
                 for k in range(len(runs))]
    model = ModelBundle(args.model or default_model_path(), threads=args.threads)
    report = {"protocol": "each run's fields, zoomed or framed, found by the detector trained without that run", "zooms": {}}
    frames = [tuple(int(v) for v in f.split("x")) for f in args.frames.split(",") if f]
    for zoom in [float(z) for z in args.zooms.split(",") if z] + frames:
        label = f"frame {zoom[0]}x{zoom[1]}" if isinstance(zoom, tuple) else f"zoom {zoom:g}"
        report["zooms"][label] = row = {"default_scale": score_zoom(detectors, runs, data, annotations, zoom, 1),
                                            "followed": score_zoom(detectors, runs, data, annotations, zoom, MAX_PASSES, model)}
        for how, r in row.items():
            print(f"{label}, {how.replace('_', ' ')}: recall {r['recall']:.3f} ("
                  + " / ".join(f"{x['recall']:.3f}" for x in r["runs"]) + f"), precision {r['precision']:.3f} ("
                  + " / ".join(f"{x['precision']:.3f}" for x in r["runs"]) + f"), infected cells boxed {r['infected_boxed']:.3f}, "
                  f"{r['seconds_per_field']:.3f} s a field" + (
                      f"; at the counting threshold, infected cells called Parasitized {r['infected_called_parasitized']:.3f}, "
                      f"healthy {100 * r['healthy_called_parasitized']:.1f} %, raw parasitemia "
                      + " / ".join(f"{100 * x['raw_parasitemia']:.1f}" for x in r["runs"]) + " % (true "
                      + " / ".join(f"{100 * x['true_parasitemia']:.1f}" for x in r["runs"]) + " %)"
                      if "raw_parasitemia" in r else ""), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
