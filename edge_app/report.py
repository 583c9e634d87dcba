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

from edge_app.headline import headline
from edge_app.labels import LABELS
from edge_app.parasitemia import Parasitemia
from edge_app.smear import Cell, CellResult

#: Box colours a red-green colour-blind reader tells apart (Okabe and Ito's palette): vermillion for a cell called
#: Parasitized, bluish green for Uninfected; the Parasitized box is also twice as thick, so the two differ in shape too.
COLOURS = {LABELS[1]: (213, 94, 0), LABELS[0]: (0, 158, 115)}
#: White cells are boxed too, in a colour of their own and a double line, so a reviewer sees what was left out.
WHITE_CELL_COLOUR = (240, 228, 66)
#: A box's line is this share of the field's shorter side (2 px on a 960-line field; 4 for a Parasitized cell):
#: visible on a phone, which shows a field at a third of its size.
LINE_SHARE = 1 / 480
THUMBNAILS_SHOWN = 200
#: What the boxes on an annotated field mean, wherever one is shown.
LEGEND = ("Thick vermillion boxes: cells called Parasitized; thin green: Uninfected; double yellow: white cells, left "
          "out of the count.")
#: Annotated fields are embedded at most this wide: enough to see a box round each cell on a phone.
EMBED_WIDTH = 1024


def save_png(img: Image.Image, path: Path) -> None:
    """Lossless and quick: zlib level 1 writes a field several times faster than Pillow's default level 6, for
    slightly more bytes; a field worker waits on every field."""
    img.save(path, "PNG", compress_level=1)


def annotate(rgb: np.ndarray, results: Sequence[CellResult], white: Sequence[Cell]) -> Image.Image:
    """The field with a box round every counted cell (COLOURS: a thick vermillion one for Parasitized, a thin bluish
    green one for Uninfected) and a double yellow one round every white cell left out of the count."""
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    width = max(1, round(min(img.size) * LINE_SHARE))
    boxes = [(r.cell, COLOURS[r.label], 2 * width if r.label == LABELS[1] else width) for r in results]
    for c, colour, line in boxes + [(c, WHITE_CELL_COLOUR, width) for c in white]:
        draw.rectangle((c.x - line, c.y - line, c.x + c.width + line - 1, c.y + c.height + line - 1), outline=colour, width=line)
    for c in white:  # the second line of a white cell's box, inside the first
        gap = 2 * width
        draw.rectangle((c.x + gap, c.y + gap, c.x + c.width - gap - 1, c.y + c.height - gap - 1), outline=WHITE_CELL_COLOUR,
                       width=width)
    return img


#: How a field where no red cell was found is shown in place of its count.
NEEDS_A_LOOK = "no red cells found: needs a look (objective, focus, exposure); not counted as a zero"


def is_empty(field: dict) -> bool:
    """Whether a summary's field was read but no cell at all was found in it."""
    return not field.get("error") and not field.get("cells") and not field.get("white_cells")


def empty_fields(fields: Sequence[dict]) -> int:
    """Fields read without error in which no cell was found (a summary's "fields")."""
    return sum(1 for f in fields if is_empty(f))


def empty_text(empty: int, fields: int) -> str:
    """The slide-level line about fields where no red cell was found: they need a look, they are not zeros."""
    return (f"{empty} of {fields} field{'s' if fields != 1 else ''} had no red cell found: "
            f"{'they need' if empty != 1 else 'it needs'} a look (the 100x oil objective, focus, exposure) and "
            f"{'add' if empty != 1 else 'adds'} nothing to the count; take {'them' if empty != 1 else 'it'} again if "
            "the slide is a thin film.")


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
            f"{review['confirmed_parasitised']:,} infected cells confirmed by {', '.join(review['reviewers'])}")


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
    calibration = summary.get("calibration") or {}
    if total.errors and calibration.get("used"):
        method = (f"Corrected with this laboratory's own error rates, from {calibration['slides']} reviewed slides since "
                  f"{str(calibration['since'])[:10]} (sensitivity {pct(total.errors.sensitivity)}, false positives "
                  f"{pct(total.errors.false_positive_rate)} of other cells); the interval includes their uncertainty. "
                  f"Raw count {pct(total.raw_fraction)}.")
    elif total.errors:
        method = (f"Corrected for the counting pipeline's error rates measured on other laboratories' fields (sensitivity "
                  f"{pct(total.errors.sensitivity)}, false positives {pct(total.errors.false_positive_rate)} of other cells; "
                  f"{'no calibration of this laboratory: ' + calibration['why'] if calibration else 'no calibration of this laboratory'}"
                  f"); the interval includes their uncertainty. Raw count {pct(total.raw_fraction)}.")
    else:
        method = "Raw count: not corrected for the model's false positives and misses."
    errors = [f for f in summary["fields"] if f["error"]]
    flagged = sum(1 for f in summary["fields"] if f.get("warnings"))
    empty = empty_fields(summary["fields"])
    rows = []
    for f in summary["fields"]:
        name = e(Path(f["field"]).name)
        if f["error"]:
            rows.append(f'<tr><td>{name}</td><td colspan="4" class="err">{e(f["error"])}</td></tr>')
        elif is_empty(f):
            rows.append(f'<tr><td>{name}</td><td colspan="4" class="warn">{NEEDS_A_LOOK}</td></tr>')
            continue  # its warning says what to try: the line above says it is not a zero
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
        f'<figcaption><span title="{e(Path(t.field).name)}">{e(Path(t.field).name)}</span>P = {t.probability:.2f}'
        f'{"<br><b>" + DECIDED[t.decision] + "</b>" if t.decision else ""}</figcaption></figure>'
        for t in thumbnails[:THUMBNAILS_SHOWN])
    more = f"<p>{len(thumbnails) - THUMBNAILS_SHOWN} more in parasitized/.</p>" if len(thumbnails) > THUMBNAILS_SHOWN else ""
    head = headline(total, summary.get("review"), summary.get("calibration"))
    review = summary.get("review") or {}
    reviewed = review.get("status") == "reviewed" and review.get("parasitemia") is not None
    figures = []
    if reviewed:
        rlo, rhi = review["ci95"]
        figures.append(f'<tr><th>Reviewed parasitemia</th><td id="reviewed">{pct(review["parasitemia"])}</td>'
                       f'<td>95 % CI {pct(rlo)} to {pct(rhi)}</td><td>{review["confirmed_parasitised"]:,} infected cells '
                       f'confirmed by {e(", ".join(review["reviewers"]))}, corrected for the infected cells a review '
                       'is not shown</td></tr>')
    figures.append(f'<tr><th>Automatic estimate</th><td>{pct(total.fraction)}</td><td>95 % CI {pct(lo)} to {pct(hi)}</td>'
                   f'<td>{e(method)}</td></tr>')
    figures.append(f'<tr><th>Cells flagged</th><td>{total.parasitized:,}</td><td>of {total.cells:,} counted</td>'
                   f'<td>called Parasitized at P &ge; {summary["threshold"]:.3f}, in {len(summary["fields"]) - len(errors)} '
                   f'fields{f", {len(errors)} unreadable" if errors else ""}</td></tr>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{e(title_of(summary))}: malaria-edge slide report</title>
<style>
body {{ font-family: sans-serif; margin: 1em; max-width: 60em; }}
.big {{ font-size: 1.6em; font-weight: bold; margin: .2em 0; }}
.warn {{ background: #fff3cd; border: 1px solid #e0b000; padding: .6em; }}
.err {{ color: #b00020; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: .3em .6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
table.identity th, table.figures th {{ text-align: left; font-weight: normal; color: #555; }}
table.identity td, table.figures td {{ text-align: left; }}
img.field {{ max-width: 100%; height: auto; }}
details {{ margin: .3em 0; }} summary {{ cursor: pointer; padding: .3em 0; }}
.thumbs {{ display: flex; flex-wrap: wrap; gap: 4px; }}
figure {{ margin: 0; width: 80px; text-align: center; font-size: .75em; }}
figcaption span {{ display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
figure img {{ width: 80px; height: 80px; object-fit: contain; background: #000; }}
@media print {{
  body {{ margin: 0; max-width: none; font-size: 10pt; }}
  .warn {{ border: 1px solid #000; background: none; }}
  #fields {{ break-before: page; }}
  details > summary {{ list-style: none; }}
  img.field {{ max-height: 12cm; width: auto; }}
}}
@page {{ size: A4; margin: 1.5cm; }}
</style></head><body>
<h1>{e(title_of(summary))}</h1>
<table class="identity">
<tr><th>Sample</th><td id="sample">{e(summary.get("sample") or "not given")}</td><th>Operator</th><td id="operator">{e(summary.get("operator") or "not given")}</td></tr>
<tr><th>Counted</th><td id="counted">{e(when(summary))}</td><th>Device</th><td>{e(summary.get("device") or "not recorded")}</td></tr>
<tr><th>Slide id</th><td>{e(str(summary.get("id") or summary["slide"]))}</td><th>Models</th><td>{e(summary["model"])} ({e(str(summary.get("model_version") or ""))}); {e(str(summary.get("cells_found_by", "")).split(" (sha256")[0])}</td></tr>
</table>
<p class="big" id="headline">{e(head.figure[0].upper() + head.figure[1:])}</p>
<p id="headline-text">{e(head.text[0].upper() + head.text[1:])}.</p>
{_review_html(summary.get("review")) if not reviewed else ""}
<div class="scroll"><table class="figures">{"".join(figures)}</table></div>
{f'<p class="warn">{e(warning)}.</p>' if warning else ""}
{f'<p class="warn" id="empty-fields">{empty_text(empty, len(summary["fields"]))}</p>' if empty else ""}
{f'<p class="warn">{flagged} of {len(summary["fields"])} fields look unlike the fields the models were trained on (stain, cell size or focus: see the table): treat the count with caution.</p>' if flagged else ""}
<p>Screening aid, not a diagnosis: a microscopist should confirm the cells below before treatment decisions.</p>
<h2 id="fields">Fields</h2>
<div class="scroll"><table><tr><th>field</th><th>cells</th><th>called Parasitized (raw)</th>
<th>parasitemia{" (corrected)" if total.errors else ""}</th><th>95 % interval</th></tr>
{"".join(rows)}
</table></div>
<h2>Annotated fields</h2>
<p>{LEGEND}</p>
{"".join(images)}
<h2>Cells called Parasitized ({len(thumbnails)})</h2>
<div class="thumbs">{thumbs}</div>{more}
</body></html>
"""


def title_of(summary: dict) -> str:
    """What a report or page is titled by: the sample code given, else the slide's folder name."""
    return f"Sample {summary['sample']}" if summary.get("sample") else f"Slide {summary['slide']}"


def when(summary: dict) -> str:
    """When a slide was counted, as a person reads it: "2026-12-06 21:48 UTC"."""
    stamp = str(summary.get("counted") or summary.get("started") or "")
    return f"{stamp[:16].replace('T', ' ')} UTC" if stamp.endswith(("+00:00", "Z")) else stamp[:16].replace("T", " ") or "-"
