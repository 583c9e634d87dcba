"""One slide's output folder: per-cell results, annotated fields, parasitised-cell crops, summary and report.

The results file is the single record of what was counted: it is written
durably field by field like `classify` results, and a resumed run starts its
counts from the fields already in it and skips them, so an interrupted slide
loses nothing and is never counted twice.

    OUT/cells.csv        one row per cell (or one per empty / unreadable field)
    OUT/annotated/       each field with boxes coloured by label
    OUT/parasitized/     crops of the cells called Parasitized, for a microscopist to confirm
    OUT/counting.json    the models (sha256) and threshold the slide is counted with; a resume must match
    OUT/checks.jsonl     each field's stain, cell size and focus, and the warnings they raised
    OUT/slide.json       the slide's id, sample code, operator and start time (the register's key)
    OUT/review.jsonl     a microscopist's decisions on its cells (edge_app.review)
    OUT/summary.json     per-field and slide totals with the 95 % interval, and the review
    OUT/report.html      the same for a phone browser, offline

A count and a review of the same slide may run at once (`capture` adding
fields while `serve` records decisions): both write the summary and report
through `publish`, holding the folder's lock, and build them from the
folder's files, so neither loses the other's work.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import shutil
import socket
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from edge_app.calibration import Calibration, slide_stain
from edge_app.detect import CellDetector
from edge_app.field_check import check_field
from edge_app.labels import LABELS
from edge_app.model import ModelBundle
from edge_app.parasitemia import MIN_RELIABLE_CELLS, CountingErrors, Parasitemia
from edge_app.report import Thumbnail, annotate, render_html, save_png
from edge_app.results import SLIDE_MODE, OutputError, ResultWriter, folder_lock, maker_changes, parse_rows, read_in, write_atomic
from edge_app.review import REVIEW_FILE, Review, cell_key, numbered_cells, read_decisions, review_cells, row_box, white_cell_rows
from edge_app.smear import Cell, CellResult, classify_cells, find_field_cells

CELL_FIELDS = ("field", "cell", "x", "y", "width", "height", "label", "probability", "status", "error")
SLIDE_FILE = "slide.json"
SUMMARY_FILE = "summary.json"


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_identity(folder: str | os.PathLike) -> dict:
    """A slide's id, sample, operator and start time: from its slide.json, else from its summary (slide.json lost),
    else an id made from its path (a folder counted before slide ids existed), so that rebuilding the register and
    resuming the count always give it the same id."""
    folder = Path(folder)
    for name in (SLIDE_FILE, SUMMARY_FILE):
        try:
            ident = json.loads(read_in(folder, name).decode("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(ident, dict) and isinstance(ident.get("id"), str) and ident["id"]:
            return {k: ident.get(k) for k in ("id", "sample", "operator", "started")}
    return {"id": hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16], "sample": None, "operator": None,
            "started": None}


@dataclass(frozen=True)
class CellRow:
    field: str
    cell: int | None = None
    box: tuple[int, int, int, int] | None = None
    label: str | None = None
    probability: float | None = None
    status: str = "ok"  # "ok" (a red cell), "white_cell" (left out of the count), "empty" (no cells), "error" (unreadable)
    error: str = ""

    def as_dict(self) -> dict:
        x, y, w, h = self.box or (None,) * 4
        return {"field": self.field, "cell": self.cell, "x": x, "y": y, "width": w, "height": h, "label": self.label,
                "probability": None if self.probability is None else round(self.probability, 6),
                "status": self.status, "error": self.error or None}


@dataclass(frozen=True)
class FieldCount:
    field: str
    cells: int
    parasitized: int
    error: str = ""
    warnings: tuple[str, ...] = ()
    white_cells: int = 0


def count_fields(rows: list[dict]) -> list[FieldCount]:
    """Per-field counts from result rows (as read back from the file), in the order fields were done."""
    fields: OrderedDict[str, list[dict]] = OrderedDict()
    for r in rows:
        fields.setdefault(r["field"], []).append(r)
    counts = []
    for name, rs in fields.items():
        cells = [r for r in rs if r["status"] == "ok"]
        error = next((r["error"] for r in rs if r["status"] == "error"), "") or ""
        counts.append(FieldCount(name, len(cells), sum(r["label"] == LABELS[1] for r in cells), error,
                                 white_cells=sum(r["status"] == "white_cell" for r in rs)))
    return counts


def slide_summary(counts: list[FieldCount], min_cells: int = MIN_RELIABLE_CELLS, errors: CountingErrors | None = None) -> Parasitemia:
    ok = [c for c in counts if not c.error]
    return Parasitemia(sum(c.cells for c in ok), sum(c.parasitized for c in ok), min_cells, errors)


class SlideRun:
    """Analyse fields into an output folder; `finish` writes the summary and report.

    Cells are counted at the model's counting threshold, and the parasitemia
    corrected for its measured error rates there, when the model's sidecar
    has them; a threshold given by hand has no measured error rates, so its
    count is reported raw. With the counting threshold comes the model's
    review threshold, when it has one: the review shows every cell at or
    above it, and corrects the reviewed count for the sensitivity there.
    """

    def __init__(self, out: str | Path, model: ModelBundle, fmt: str = "csv", resume: bool = False, overwrite: bool = False,
                 threshold: float | None = None, min_cells: int = MIN_RELIABLE_CELLS, detector: CellDetector | None = None,
                 embed: bool = True, sample: str | None = None, operator: str | None = None,
                 calibration: Calibration | None = None):
        self.out = Path(out)
        self.calibration = calibration if threshold is None else None  # a threshold given by hand has no rates
        self.embed = embed
        self.model = model
        self.detector = detector
        counting = model.counting if threshold is None else None
        self.threshold = counting.threshold if counting else (model.threshold if threshold is None else threshold)
        self.errors = counting.errors if counting else None
        self.review = model.review if counting else None
        self.min_cells = min_cells
        self.results_path = self.out / f"cells.{fmt}"
        self.out.mkdir(parents=True, exist_ok=True, mode=SLIDE_MODE)
        self.writer = ResultWriter(str(self.results_path), fmt, resume=resume, overwrite=overwrite, fields=CELL_FIELDS)
        for sub in ("annotated", "parasitized"):
            if not resume:  # images of an earlier count would be shown as this one's (captured fields/ are inputs: kept)
                shutil.rmtree(self.out / sub, ignore_errors=True)
            (self.out / sub).mkdir(exist_ok=True)
        self._check_same_counting(resume)
        self.checks_path = self.out / "checks.jsonl"
        if not resume:  # a new count: the old one's checks and review decisions are about other cells
            self.checks_path.unlink(missing_ok=True)
            (self.out / REVIEW_FILE).unlink(missing_ok=True)
        self.identity = self._identify(resume, sample, operator)
        checked = read_checks(self.out)
        self.counts = [replace(c, warnings=checked.get(c.field, ())) for c in count_fields(self.writer.previous)]

    def _check_same_counting(self, resume: bool) -> None:
        """Every field of a slide must be counted by one model at one threshold, or the totals mean nothing."""
        counting = {"model_sha256": self.model.meta["tflite_sha256"], "threshold": self.threshold,
                    "detector_sha256": self.detector.meta["tflite_sha256"] if self.detector else "classical",
                    "stain_cell_colour": list(self.model.cell_colour) if self.model.cell_colour else None}
        record = self.out / "counting.json"
        changes = maker_changes(record, counting, counting) if resume else None
        if changes:
            self.writer.close()
            raise OutputError(f"{self.out} was counted with {changes}; resume it with the same --model, --detector and "
                              "--threshold, or count into a new folder")
        write_atomic(record, json.dumps(counting, indent=1))

    def _identify(self, resume: bool, sample: str | None, operator: str | None) -> dict:
        """The slide's slide.json: kept by a resume (with a new sample code or operator if given), new otherwise.

        A resumed folder from before slide.json existed keeps the id its path
        gives it (`read_identity`), the one `slides rebuild` registered it under.
        """
        ident = read_identity(self.out) if resume else {
            "id": datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3),
            "sample": None, "operator": None, "started": now_text()}
        ident.update({k: v for k, v in (("sample", sample), ("operator", operator)) if v is not None})
        write_atomic(self.out / SLIDE_FILE, json.dumps(ident, indent=1))
        return ident

    @property
    def done(self) -> set[str]:
        """Fields already counted (also by an earlier run of this slide)."""
        return {c.field for c in self.counts}

    @staticmethod
    def image_name(index: int, field: str) -> str:
        """A file name for a field's images, unique in the slide: its position, then its own name."""
        return f"{index:04d}-{Path(field).stem}"

    def add_field(self, field: str, rgb: np.ndarray) -> FieldCount:
        found = find_field_cells(rgb, self.detector)
        results = classify_cells(self.model, found.red, self.threshold)
        stats, warned = check_field(rgb, found.red, self.detector)
        name = self.image_name(len(self.counts), field)
        for i, r in enumerate(results):
            if r.label == LABELS[1]:
                save_png(Image.fromarray(r.cell.crop), self.out / "parasitized" / f"{name}-cell{i:04d}.png")
        save_png(annotate(rgb, results, found.white), self.out / "annotated" / f"{name}.png")
        self.writer.write(_rows(field, results, found.white))
        self.writer.sync()  # a field is a minute of the worker's time: make it durable now
        with open(self.checks_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"field": field, "stats": stats.as_dict() if stats else None, "warnings": list(warned)}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return self._counted(FieldCount(field, len(results), sum(r.label == LABELS[1] for r in results), warnings=tuple(warned),
                                        white_cells=len(found.white)))

    def add_error(self, field: str, message: str) -> FieldCount:
        self.writer.write([CellRow(field, status="error", error=message)])
        return self._counted(FieldCount(field, 0, 0, message))

    def _counted(self, count: FieldCount) -> FieldCount:
        self.counts.append(count)
        return count

    def running_total(self) -> Parasitemia:
        return slide_summary(self.counts, self.min_cells, self.errors)

    def calibrated(self) -> tuple[CountingErrors | None, dict | None]:
        """The error rates the slide's count is corrected with, and what the summary says of the calibration: this
        laboratory's (edge_app.calibration) when its reviewed slides' stain matches this slide's, else the model's."""
        if self.calibration is None or self.errors is None:
            return self.errors, None
        held = self.calibration.describe()
        if not self.calibration.usable:
            return self.errors, {"used": False, "why": "no slide of this laboratory fully reviewed yet", **held}
        if not self.calibration.matches(slide_stain(read_checks_stats(self.out))):
            return self.errors, {"used": False, "why": "this slide's stain is unlike the reviewed slides'", **held}
        return self.calibration.errors(len([c for c in self.counts if not c.error])), {"used": True, **held}

    def finish(self) -> dict:
        """Write summary.json and report.html (earlier runs' fields, and any review, included); returns the summary."""
        self.writer.close()
        errors, calibration = self.calibrated()
        total = slide_summary(self.counts, self.min_cells, errors)
        annotated = [Path("annotated") / f"{self.image_name(i, c.field)}.png" for i, c in enumerate(self.counts)]
        summary = {
            "slide": self.out.name,
            **self.identity,
            "counted": now_text(),
            "device": socket.gethostname(),
            **self.model.provenance(self.threshold),
            "cells_found_by": f"{self.detector.name} (sha256 {self.detector.meta['tflite_sha256']})" if self.detector
                              else "classical OpenCV segmentation",
            "results": self.results_path.name,
            "total": total.as_dict(),
            "calibration": calibration,
            "white_cells": sum(c.white_cells for c in self.counts),
            "review_from": {"threshold": self.review.threshold, "corrected_for": asdict(self.review.errors),
                            "enlarged_area": self.review.enlarged_area, "white_cells": self.review.white_cells}
            if self.review else None,
            "fields": [{"field": c.field, "cells": c.cells, "parasitized": c.parasitized, "error": c.error or None,
                        "parasitemia": p.fraction, "ci95": list(p.interval), "raw_parasitemia": p.raw_fraction,
                        "warnings": list(c.warnings), "white_cells": c.white_cells,
                        "annotated": str(a) if (self.out / a).exists() else None}
                       for c, a in zip(self.counts, annotated) for p in [Parasitemia(c.cells, c.parasitized, errors=errors)]],
            "embed": self.embed,
        }
        return publish(self.out, summary)


def read_summary(folder: str | os.PathLike) -> dict:
    """A counted slide's summary.json (OSError or ValueError when there is none, or it is not one)."""
    summary = json.loads(read_in(folder, SUMMARY_FILE).decode("utf-8"))
    if not isinstance(summary, dict) or not {"results", "total", "fields"} <= summary.keys():
        raise ValueError(f"{folder}/{SUMMARY_FILE} is not a malaria-edge slide summary")
    return summary


def slide_rows(folder: str | os.PathLike, summary: dict) -> list[dict]:
    """The slide's per-cell rows, from the results file its summary names (a name, never a path, so it stays inside).

    Kept parsed while the file is unchanged, since every review decision
    needs them and a slide has thousands. Do not modify them.
    """
    return _rows_of(*_results_version(folder, summary))


def cell_boxes(folder: str | os.PathLike, summary: dict) -> dict[str, tuple[int, int, int, int]]:
    """Each counted cell's and white cell's box in its field by its review key (edge_app.review.cell_key): where the
    review finds a cell to show."""
    return _boxes_of(*_results_version(folder, summary))


def _results_version(folder: str | os.PathLike, summary: dict) -> tuple[str, int, int]:
    """The results file and what changes when it does (mtime, size): the key of the parsed copies below."""
    path = Path(folder) / Path(summary["results"]).name
    stat = path.lstat()
    return str(path), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=8)
def _rows_of(path: str, _mtime_ns: int, _size: int) -> list[dict]:
    text = read_in(Path(path).parent, Path(path).name).decode("utf-8")
    return parse_rows(text, Path(path).suffix.lstrip(".") or "csv", CELL_FIELDS, path)


@functools.lru_cache(maxsize=8)
def _boxes_of(path: str, mtime_ns: int, size: int) -> dict[str, tuple[int, int, int, int]]:
    rows = _rows_of(path, mtime_ns, size)
    return ({cell_key(no, int(r["cell"])): row_box(r) for no, r in numbered_cells(rows)}
            | {cell_key(no, i, white=True): row_box(r) for no, i, r in white_cell_rows(rows)})


def total_from_summary(summary: dict) -> Parasitemia:
    """The slide's automatic parasitemia, as `finish` computed it, back from its summary."""
    t = summary["total"]
    return Parasitemia(t["cells"], t["parasitized"], t["min_cells"],
                       CountingErrors(**t["corrected_for"]) if t.get("corrected_for") else None)


def slide_review(folder: str | os.PathLike, summary: dict, rows: list[dict] | None = None) -> Review:
    """The review of a slide so far: its cells to review and the decisions in its folder.

    With a review threshold (the summary's "review_from") every cell at or
    above it is shown, and the enlarged and white cells when the review block
    the slide was counted with was measured showing them, and the reviewed
    count is corrected for the sensitivity measured there; without one, the
    cells called Parasitized, and the counting sensitivity.
    """
    total = total_from_summary(summary)
    rows = slide_rows(folder, summary) if rows is None else rows
    review_from = summary.get("review_from")
    threshold = float(review_from["threshold"]) if review_from else None
    errors = CountingErrors(**review_from["corrected_for"]) if review_from else total.errors
    shows = review_from or {}
    return Review(review_cells(rows, str(summary.get("id") or read_identity(folder)["id"]), threshold,
                               enlarged_area=shows.get("enlarged_area"), white_cells=bool(shows.get("white_cells"))),
                  read_decisions(folder), total.cells, errors, total.min_cells)


def publish(folder: str | os.PathLike, summary: dict | None = None) -> dict:
    """Write summary.json and report.html, the review so far included, holding the folder's lock; returns the summary.

    Called with a new summary when a count finishes, and without one (the
    folder's own, read under the lock so a count finishing meanwhile is not
    undone) after every review decision: the reviewed parasitemia is in the
    summary and the report as soon as it exists.
    """
    folder = Path(folder)
    with folder_lock(folder):
        summary = read_summary(folder) if summary is None else summary
        rows = slide_rows(folder, summary)
        review = slide_review(folder, summary, rows)
        summary = {**summary, "review": review.as_dict()}
        write_atomic(folder / SUMMARY_FILE, json.dumps(summary, indent=1))
        write_atomic(folder / "report.html", render_html(summary, total_from_summary(summary),
                                                         thumbnails(folder, rows, review), folder, summary.get("embed", True)))
    return summary


def thumbnails(folder: Path, rows: list[dict], review: Review) -> list[Thumbnail]:
    """The crops of the cells called Parasitized, in field order, with their probabilities and the reviewer's decision."""
    thumbs = []
    for no, r in numbered_cells(rows):
        if r["label"] != LABELS[1]:
            continue
        path = folder / "parasitized" / f"{SlideRun.image_name(no, r['field'])}-cell{int(r['cell']):04d}.png"
        if path.exists():
            decision = review.decisions.get(cell_key(no, int(r["cell"])))
            thumbs.append(Thumbnail(path, r["field"], float(r["probability"]), decision.decision if decision else None))
    return thumbs


def read_checks_stats(folder: str | os.PathLike) -> list[dict]:
    """A slide's field checks (checks.jsonl: each field's measurements and warnings), a line torn by a power cut or
    a missing file ignored."""
    try:
        text = read_in(folder, "checks.jsonl").decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def read_checks(folder: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """The field checks' warnings by field, as appended by `add_field`."""
    checks: dict[str, tuple[str, ...]] = {}
    for entry in read_checks_stats(folder):
        try:
            checks[entry["field"]] = tuple(entry["warnings"])
        except (KeyError, TypeError):
            continue
    return checks


def _rows(field: str, results: list[CellResult], white: list[Cell]) -> list[CellRow]:
    if not results and not white:
        return [CellRow(field, status="empty")]
    return [CellRow(field, i, (r.cell.x, r.cell.y, r.cell.width, r.cell.height), r.label, r.probability)
            for i, r in enumerate(results)] + [CellRow(field, box=(c.x, c.y, c.width, c.height), status="white_cell") for c in white]
