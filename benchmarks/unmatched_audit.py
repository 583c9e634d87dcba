"""What are the detections that match no annotated box, and the boxed healthy cells called Parasitized? Counts, and draws
them to look at.

    python benchmarks/unmatched_audit.py --run 0 --detector runs/det-cv/run0/cell-detector-int8.tflite --out audit.png

Red-cell precision (benchmarks/real_fields.py) counts every detection that
matches no box (IoU >= 0.5) as wrong, but the annotators left some cells
unboxed. This splits a held-out run's unmatched detections into: touching
the image border; overlapping a box at IoU 0.1-0.5 (a duplicate, or a box
drawn round a clump); and far from every box (IoU < 0.1) away from the
border, the ones that are either a red cell without a box or not a red cell
at all (white cells, platelets, debris). A seeded random sample of the last
kind is drawn as a montage (the detection in red, the nearest boxes in
blue) for a person to sort by eye. Detections on a `difficult` box count
neither way, as in the benchmark's protocol.

`--called-parasitized` draws instead every detection far from the boxes
that the classifier calls Parasitized at its counting threshold, the
false calls that are not on an annotated cell (white-cell nuclei, smudged
cells, stain strands, platelet clumps, or unboxed and maybe infected cells):

    python benchmarks/unmatched_audit.py --run 0 --detector runs/det-cv/run0/cell-detector-int8.tflite --called-parasitized --out calls0.png

`--healthy-called-parasitized` draws every detection matched to a box
labelled healthy that the classifier calls Parasitized: what the
"healthy cells called Parasitized" figure counts. Some hold a platelet or
debris on their rim, some a dot that may be a parasite the annotators did
not mark; only a microscopist can tell, and the figure is only as right as
the labels:

    python benchmarks/unmatched_audit.py --run 0 --detector runs/det-cv/run0/cell-detector-int8.tflite --healthy-called-parasitized --out healthy0.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_app.detect import CellDetector  # noqa: E402
from edge_app.labels import POSITIVE  # noqa: E402
from edge_app.model import ModelBundle, default_model_path  # noqa: E402
from edge_app.preprocess import load_rgb  # noqa: E402
from edge_app.smear import classify_cells, find_cells  # noqa: E402
from training.fields import DIFFICULT, OFF_BOX_IOU, iou_matrix, load_annotations, match_boxes, not_on_difficult, runs_of  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "iml_malaria"
BORDER = 3
TILE = 100


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--run", type=int, required=True, help="The run to audit (held out from --detector's training).")
    ap.add_argument("--detector", required=True, help="A detector that never saw --run (runs/det-cv/runK/...).")
    ap.add_argument("--out", type=Path, required=True, help="The montage (PNG).")
    ap.add_argument("--sample", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    calls = ap.add_mutually_exclusive_group()
    calls.add_argument("--called-parasitized", action="store_true",
                       help="Draw every detection far from the boxes that is called Parasitized (at the counting threshold).")
    calls.add_argument("--healthy-called-parasitized", action="store_true",
                       help="Draw every detection on a box labelled healthy that is called Parasitized (at the counting threshold).")
    ap.add_argument("--model", default=None, help="With either of those: the classifier (default: the shipped one).")
    args = ap.parse_args(argv)
    annotations = load_annotations(args.data / "annotations.json")
    detector = CellDetector(args.detector, threads=2)
    drawn_calls = args.called_parasitized or args.healthy_called_parasitized
    model = ModelBundle(args.model or default_model_path(), threads=2) if drawn_calls else None
    threshold = (model.counting.threshold if model.counting else model.threshold) if model else None
    counts = dict(detections=0, matched=0, border=0, near_a_box=0, far=0)
    drawn: list[tuple[Image.Image, tuple[int, int, int, int], np.ndarray]] = []
    for name in runs_of(sorted(annotations))[args.run]:
        rgb = load_rgb(args.data / "images" / name)
        height, width = rgb.shape[:2]
        cells = find_cells(rgb, detector)
        called = np.array([r.label == POSITIVE for r in classify_cells(model, cells, threshold)] if model else [True] * len(cells))
        detected = np.array([[c.x, c.y, c.width, c.height] for c in cells], float).reshape(-1, 4)
        keep = not_on_difficult(annotations[name], detected)  # a difficult box counts neither way, nor its detection
        detected, called = detected[keep], called[keep]
        boxes = [b for b in annotations[name] if b.kind != DIFFICULT]
        truth = np.array([[b.x, b.y, b.w, b.h] for b in boxes], float).reshape(-1, 4)
        matched = {j: boxes[i] for i, j in match_boxes(truth, detected)}
        best = iou_matrix(detected, truth).max(axis=1) if len(truth) else np.zeros(len(detected))
        field = Image.fromarray(rgb)
        for j, (x, y, w, h) in enumerate(detected.astype(int)):
            counts["detections"] += 1
            if j in matched:
                counts["matched"] += 1
                if args.healthy_called_parasitized and called[j] and not matched[j].infected:
                    drawn.append((field, (x, y, w, h), truth))
            elif x <= BORDER or y <= BORDER or x + w >= width - BORDER or y + h >= height - BORDER:
                counts["border"] += 1
            elif best[j] >= OFF_BOX_IOU:
                counts["near_a_box"] += 1
            else:
                counts["far"] += 1
                if called[j] and not args.healthy_called_parasitized:
                    drawn.append((field, (x, y, w, h), truth))
    print(f"run {args.run}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    rng = np.random.default_rng(args.seed)
    sample = len(drawn) if drawn_calls else min(args.sample, len(drawn))
    picked = [drawn[i] for i in sorted(rng.choice(len(drawn), sample, replace=False))]
    cols = 10
    montage = Image.new("RGB", (cols * TILE, -(-len(picked) // cols) * TILE), "white")
    for i, (field, (x, y, w, h), truth) in enumerate(picked):
        side = 2 * max(w, h)
        x0, y0 = x + w // 2 - side // 2, y + h // 2 - side // 2
        tile = field.crop((x0, y0, x0 + side, y0 + side)).resize((TILE, TILE))
        draw = ImageDraw.Draw(tile)
        k = TILE / side
        for bx, by, bw, bh in truth:
            draw.rectangle(((bx - x0) * k, (by - y0) * k, (bx - x0 + bw) * k, (by - y0 + bh) * k), outline=(0, 0, 255))
        draw.rectangle(((x - x0) * k, (y - y0) * k, (x - x0 + w) * k, (y - y0 + h) * k), outline=(255, 0, 0))
        montage.paste(tile, ((i % cols) * TILE, (i // cols) * TILE))
    montage.save(args.out)
    kind = ("on a healthy box and called Parasitized" if args.healthy_called_parasitized
            else "far from every box and called Parasitized" if args.called_parasitized else f"of the {counts['far']:,} far from every box")
    print(f"{len(picked)} {kind}, drawn in {args.out}")


if __name__ == "__main__":
    main()
