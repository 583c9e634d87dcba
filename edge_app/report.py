"""What a person looks at: fields with boxed cells, and one HTML page per slide.

The page is a single file with the annotated fields and the parasitised-cell
thumbnails embedded, so it opens offline on a phone even when copied away
from the output folder (`--no-embed` links the fields instead, for a
smaller file).
"""

from __future__ import annotations

import base64
import functools
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from edge_app.labels import LABELS
from edge_app.parasitemia import Parasitemia
from edge_app.smear import Cell, CellResult

COLOURS = {LABELS[1]: (220, 20, 60), LABELS[0]: (0, 150, 70)}
#: White cells are boxed too, in a colour of their own, so a reviewer sees what was left out of the count.
WHITE_CELL_COLOUR = (255, 140, 0)
THUMBNAILS_SHOWN = 200
#: Annotated fields are embedded at most this wide: enough to see a box round each cell on a phone.
EMBED_WIDTH = 1024


def save_png(img: Image.Image, path: Path) -> None:
    """Lossless and quick: zlib level 1 writes a field several times faster than Pillow's default level 6, for
    slightly more bytes; a field worker waits on every field."""
    img.save(path, "PNG", compress_level=1)


def annotate(rgb: np.ndarray, results: Sequence[CellResult], white: Sequence[Cell]) -> Image.Image:
    """The field with a box round every counted cell, red for Parasitized and green for Uninfected, and an orange one
    round every white cell left out of the count."""
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    width = max(1, min(img.size) // 400)
    for c, colour in [(r.cell, COLOURS[r.label]) for r in results] + [(c, WHITE_CELL_COLOUR) for c in white]:
        draw.rectangle((c.x - width, c.y - width, c.x + c.width + width - 1, c.y + c.height + width - 1),
                       outline=colour, width=width)
    return img


def white_cells_text(n: int | None) -> str:
    """How a field's white cells are mentioned beside its count: not at all when there are none."""
    return f"; {n} white cell{'' if n == 1 else 's'} left out" if n else ""


@dataclass(frozen=True)
class Thumbnail:
    """A cell called Parasitized, as its crop in parasitized/ and where it came from."""

    path: Path
    field: str
    probability: float
    decision: str | None = None  # a reviewer's "confirm" or "reject"


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _field_jpeg(path: Path) -> str:
    """An annotated field as an embedded JPEG, at most EMBED_WIDTH wide: a tenth of the PNG's bytes, sharp enough on a phone."""
    return _field_jpeg_cached(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _field_jpeg_cached(path: Path, _mtime_ns: int) -> str:
    """The report is rewritten after every review decision; the fields in it do not change (the mtime says if one did)."""
    with Image.open(path) as img:
        return data_uri(jpeg_bytes(fit_width(img.convert("RGB"), EMBED_WIDTH), quality=80), "image/jpeg")


def fit_width(img: Image.Image, width: int) -> Image.Image:
    """At most `width` pixels wide, the aspect kept: what a phone or an embedded report needs of a field."""
    if img.width <= width:
        return img
    return img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)


def jpeg_bytes(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def pct(x: float | None) -> str:
    """A share as the pages show it, "1.27 %"; "-" for one not known yet (a slide not reviewed)."""
    return "-" if x is None else f"{100 * x:.2f} %"


#: A decision as a person reads it (the report, the review grid).
DECIDED = {"confirm": "confirmed", "reject": "rejected"}


def review_text(review: dict | None) -> str:
    """The review's state in one line, as the register, the report and the web app show it."""
    if not review or review["status"] == "counted":
        return "not reviewed yet"
    if review["status"] == "in review":
        return f"in review: {review['decided']} of {review['cells_to_review']} cells decided"
    lo, hi = review["ci95"]
    return (f"reviewed parasitemia {pct(review['parasitemia'])} (95 % CI {pct(lo)} to {pct(hi)}): "
            f"{review['confirmed_parasitised']:,} cells confirmed parasitised by {', '.join(review['reviewers'])}")


def _review_html(review: dict | None) -> str:
    if not review or review["status"] == "counted":
        return '<p>Not reviewed yet: a microscopist confirms or rejects the flagged cells in <code>malaria-edge serve</code>.</p>'
    big = ' class="big"' if review["status"] == "reviewed" else ""
    text = review_text(review)
    return f'<p{big} id="reviewed">{html.escape(text[0].upper() + text[1:])}</p>'


def render_html(summary: dict, total: Parasitemia, thumbnails: Sequence[Thumbnail], folder: Path, embed: bool = True) -> str:
    """The slide report: verdict first, then the fields (each with its interval and image), then the cells to confirm.

    With `embed`, every image is inside the file (data URIs), so the page
    shows everything when copied alone to a phone; without, the annotated
    fields are links to the PNGs in `folder`. Nothing is ever fetched from
    outside the folder: the page's content security policy forbids it.
    """
    e = html.escape
    lo, hi = total.interval
    warning = total.warning()
    if total.errors:
        method = (f"Corrected for the counting pipeline's error rates measured on cells it never trained on (sensitivity "
                  f"{pct(total.errors.sensitivity)}, false positives {pct(total.errors.false_positive_rate)} of other cells); "
                  f"the interval includes their uncertainty. Raw count {pct(total.raw_fraction)}.")
    else:
        method = "Raw count: not corrected for the model's false positives and misses."
    errors = [f for f in summary["fields"] if f["error"]]
    flagged = sum(1 for f in summary["fields"] if f.get("warnings"))
    rows = []
    for f in summary["fields"]:
        name = e(Path(f["field"]).name)
        if f["error"]:
            rows.append(f'<tr><td>{name}</td><td colspan="4" class="err">{e(f["error"])}</td></tr>')
        else:
            flo, fhi = f["ci95"]
            rows.append(f'<tr><td>{name}</td><td>{f["cells"]:,}</td><td>{f["parasitized"]:,}</td>'
                        f'<td>{pct(f["parasitemia"])}</td><td>{pct(flo)} to {pct(fhi)}</td></tr>')
        for w in f.get("warnings") or ():
            rows.append(f'<tr><td></td><td colspan="4" class="warn">{e(w)}</td></tr>')
    images = []
    for f in summary["fields"]:
        if not f.get("annotated"):
            continue
        label = (f'{e(Path(f["field"]).name)}: {f["parasitized"]:,} of {f["cells"]:,} cells called Parasitized'
                 f'{white_cells_text(f.get("white_cells"))}')
        if embed:
            images.append(f'<details><summary>{label}</summary><img class="field" src="{_field_jpeg(folder / f["annotated"])}" '
                          f'alt="{label}"></details>')
        else:
            images.append(f'<p><a href="{e(f["annotated"])}">{label}</a></p>')
    thumbs = "".join(
        f'<figure><img src="{data_uri(t.path.read_bytes(), "image/png")}" alt="cell from {e(Path(t.field).name)}">'
        f'<figcaption>{e(Path(t.field).name)}<br>P = {t.probability:.2f}'
        f'{"<br><b>" + DECIDED[t.decision] + "</b>" if t.decision else ""}</figcaption></figure>'
        for t in thumbnails[:THUMBNAILS_SHOWN])
    more = f"<p>{len(thumbnails) - THUMBNAILS_SHOWN} more in parasitized/.</p>" if len(thumbnails) > THUMBNAILS_SHOWN else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>Slide {e(summary["slide"])}: malaria-edge</title>
<style>
body {{ font-family: sans-serif; margin: 1em; max-width: 60em; }}
.big {{ font-size: 1.6em; font-weight: bold; }}
.warn {{ background: #fff3cd; border: 1px solid #e0b000; padding: .6em; }}
.err {{ color: #b00020; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: .3em .6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
img.field {{ max-width: 100%; height: auto; }}
details {{ margin: .3em 0; }} summary {{ cursor: pointer; padding: .3em 0; }}
.thumbs {{ display: flex; flex-wrap: wrap; gap: 4px; }}
figure {{ margin: 0; width: 80px; text-align: center; font-size: .75em; overflow-wrap: anywhere; }}
figure img {{ width: 80px; height: 80px; object-fit: contain; background: #000; }}
</style></head><body>
<h1>Slide {e(summary["slide"])}</h1>
<p class="big">Parasitemia {pct(total.fraction)}{" (automatic)" if summary.get("review") else ""}</p>
{_review_html(summary.get("review"))}
<p>95 % confidence interval {pct(lo)} to {pct(hi)}: {total.parasitized:,} cells called Parasitized of {total.cells:,} counted
in {len(summary["fields"]) - len(errors)} fields{f", {len(errors)} fields unreadable" if errors else ""}. {e(method)}</p>
{f'<p class="warn">{e(warning)}.</p>' if warning else ""}
{f'<p class="warn">{flagged} of {len(summary["fields"])} fields look unlike the fields the models were trained on (stain, cell size or focus: see the table): treat the count with caution.</p>' if flagged else ""}
<p>Screening aid, not a diagnosis: a microscopist should confirm the cells below before treatment decisions.
Model {e(summary["model"])}, cells called Parasitized at P &ge; {summary["threshold"]:.3f}.</p>
<h2>Fields</h2>
<div class="scroll"><table><tr><th>field</th><th>cells</th><th>called Parasitized (raw)</th>
<th>parasitemia{" (corrected)" if total.errors else ""}</th><th>95 % interval</th></tr>
{"".join(rows)}
</table></div>
<h2>Annotated fields</h2>
<p>Red boxes: cells called Parasitized; green: Uninfected; orange: white cells, left out of the count.</p>
{"".join(images)}
<h2>Cells called Parasitized ({len(thumbnails)})</h2>
<div class="thumbs">{thumbs}</div>{more}
</body></html>
"""
