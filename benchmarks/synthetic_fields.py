"""Compose microscope fields from cell images with known positions and labels.

The smear tests (synthetic drawn cells) and the smear benchmark (real NIH cells)
both need fields whose truth is known: cells on black are pasted onto a bright,
slightly uneven background, apart or as touching pairs.

Run as a script, it writes a few fields of drawn cells to try `malaria-edge
smear` without any microscope data (they are not real smears: no figure
measured on them says anything about real fields):
    python benchmarks/synthetic_fields.py --out demo-fields --fields 3
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BACKGROUND = (228, 218, 226)


@dataclass(frozen=True)
class Placed:
    """Where a cell went: its bounding box in the field and its label."""

    x: int
    y: int
    width: int
    height: int
    label: str

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2


def cell_mask(cell: np.ndarray) -> np.ndarray:
    """The cell's own pixels in a cell-on-black image (the dark, anti-aliased rim excluded)."""
    return cell.max(axis=2) > 25


def _paste(field: np.ndarray, cell: np.ndarray, x: int, y: int) -> None:
    m = cell_mask(cell)
    h, w = m.shape
    region = field[y:y + h, x:x + w]
    region[m] = cell[m]


def _free(occupied: np.ndarray, x: int, y: int, w: int, h: int, gap: int) -> bool:
    return not occupied[max(0, y - gap):y + h + gap, max(0, x - gap):x + w + gap].any()


def compose_field(cells: list[tuple[np.ndarray, str]], shape: tuple[int, int], rng: np.random.Generator,
                  touching_pairs: int = 0, gap: int = 6, tries: int = 200) -> tuple[np.ndarray, list[Placed]]:
    """Paste (cell image, label) pairs into a field of `shape` (height, width); cells that do not fit are left out.

    The first 2 * touching_pairs cells are placed as pairs whose outlines touch
    (the second cell slid against the first until their masks meet); the rest
    lie apart, at least `gap` pixels from any other cell and from the border.
    """
    height, width = shape
    noise = rng.normal(0, 3, (height, width, 1))
    shade = np.linspace(-6, 6, width)[None, :, None]  # uneven illumination across the field
    field = np.clip(np.array(BACKGROUND)[None, None, :] + noise + shade, 0, 255).astype(np.uint8)
    occupied = np.zeros(shape, bool)
    placed: list[Placed] = []

    def occupy(cell: np.ndarray, x: int, y: int) -> None:
        m = cell_mask(cell)
        occupied[y:y + m.shape[0], x:x + m.shape[1]] |= m

    pairs = [cells[2 * i:2 * i + 2] for i in range(touching_pairs)]
    singles = cells[2 * touching_pairs:]
    for (a, la), (b, lb) in pairs:
        (ha, wa), (hb, wb) = a.shape[:2], b.shape[:2]
        ma, mb = cell_mask(a), cell_mask(b)
        for _ in range(tries):
            x, y = int(rng.integers(gap, width - wa - wb - gap)), int(rng.integers(gap, height - max(ha, hb) - gap))
            yb = y + (ha - hb) // 2
            # Slide b leftwards towards a until the two masks touch (share an edge pixel).
            xb = x + wa
            while xb > x and not _touch(ma, x, y, mb, xb - 1, yb):
                xb -= 1
            box = (x, min(y, yb), xb + wb - x, max(y + ha, yb + hb) - min(y, yb))
            if box[1] < gap or box[1] + box[3] > height - gap:
                continue
            if _free(occupied, *box, gap):
                _paste(field, a, x, y), _paste(field, b, xb, yb)
                occupy(a, x, y), occupy(b, xb, yb)
                placed += [Placed(x, y, wa, ha, la), Placed(xb, yb, wb, hb, lb)]
                break
    for c, label in singles:
        h, w = c.shape[:2]
        for _ in range(tries):
            x, y = int(rng.integers(gap, width - w - gap)), int(rng.integers(gap, height - h - gap))
            if _free(occupied, x, y, w, h, gap):
                _paste(field, c, x, y)
                occupy(c, x, y)
                placed.append(Placed(x, y, w, h, label))
                break
    return field, placed


def _touch(ma: np.ndarray, xa: int, ya: int, mb: np.ndarray, xb: int, yb: int) -> bool:
    """Would b at (xb, yb) overlap a at (xa, ya)? (Then one pixel to the right they touch.)"""
    x0, y0 = max(xa, xb), max(ya, yb)
    x1, y1 = min(xa + ma.shape[1], xb + mb.shape[1]), min(ya + ma.shape[0], yb + mb.shape[0])
    if x1 <= x0 or y1 <= y0:
        return False
    return bool((ma[y0 - ya:y1 - ya, x0 - xa:x1 - xa] & mb[y0 - yb:y1 - yb, x0 - xb:x1 - xb]).any())


def match(found: list[tuple[int, int, int, int]], truth: list[Placed]) -> int:
    """How many detections (x, y, w, h) are true cells: each matches the cell box its centre falls in, at most once.

    Recall is this over len(truth), precision this over len(found).
    """
    used: set[int] = set()
    hits = 0
    for x, y, w, h in found:
        cx, cy = x + w / 2, y + h / 2
        for i, t in enumerate(truth):
            if i not in used and t.x <= cx < t.x + t.width and t.y <= cy < t.y + t.height:
                used.add(i)
                hits += 1
                break
    return hits


def drawn_cell(rng: np.random.Generator, infected: bool) -> np.ndarray:
    """A red cell drawn on black: a pink disc, paler at the centre, with a purple ring-stage dot when infected."""
    size = int(rng.integers(76, 92))  # a red cell at 100x oil on a 1280x960 camera
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - size / 2, yy - size / 2) / (size / 2.2)
    cell = np.zeros((size, size, 3), np.float32)
    inside = r <= 1
    pink = np.array([205, 150, 165], np.float32) + rng.normal(0, 6, 3)
    cell[inside] = pink * (1 + 0.08 * (1 - r[inside])[:, None])  # the pale centre of a biconcave cell
    if infected:
        cx, cy = (size / 2 + rng.uniform(-size / 5, size / 5) for _ in range(2))
        dot = np.hypot(xx - cx, yy - cy)
        ring = inside & (np.abs(dot - size / 10) < size / 30)
        cell[ring] = (95, 35, 120)
    return np.clip(cell + rng.normal(0, 3, cell.shape) * inside[..., None], 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write fields of drawn red cells (with truth.json) to try malaria-edge smear.")
    ap.add_argument("--out", required=True, help="folder for field-NN.png and truth.json (created)")
    ap.add_argument("--fields", type=int, default=3)
    ap.add_argument("--cells", type=int, default=90, help="cells per field (those that fit)")
    ap.add_argument("--infected-share", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    truth = {}
    for f in range(args.fields):
        cells = []
        for _ in range(args.cells):
            infected = bool(rng.random() < args.infected_share)
            cells.append((drawn_cell(rng, infected), "Parasitized" if infected else "Uninfected"))
        field, placed = compose_field(cells, (960, 1280), rng, touching_pairs=5)
        name = f"field-{f + 1:02d}.png"
        Image.fromarray(field).save(out / name)
        truth[name] = [asdict(p) for p in placed]
        print(f"{out / name}: {len(placed)} cells, {sum(p.label == 'Parasitized' for p in placed)} drawn as infected")
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
