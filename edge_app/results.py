"""Write result rows so that a kill or a power cut loses almost nothing, and a rerun can resume.

Each batch of rows goes to the file in one write() call, so a killed
process leaves only whole rows; the file is fsynced at most once a second
so an SD card is not worn down by a sync per image. A line torn by a power
cut is cut off when the file is reopened for resuming.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, Protocol, Sequence

#: Results are patients' data: new results files are readable by their owner only (and a slide's folder, SLIDE_MODE).
RESULTS_MODE = 0o600
SLIDE_MODE = 0o700

#: Columns of `classify` results; other commands pass their own, the input's path first.
FIELDS = ("path", "label", "probability", "status", "error")
FORMATS = ("csv", "jsonl")


class OutputError(RuntimeError):
    """The results file cannot be used as asked."""


class Record(Protocol):
    def as_dict(self) -> dict: ...


@dataclass(frozen=True)
class Row:
    path: str
    label: str | None
    probability: float | None
    status: str  # "ok" or "error"
    error: str = ""

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "probability": None if self.probability is None else round(float(self.probability), 6),
            "status": self.status,
            "error": self.error or None,
        }


#: A CSV cell starting with one of these is run as a formula by spreadsheets (a file named "=HYPERLINK(...).png").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A text cell made safe to open in a spreadsheet: a leading formula character (or quote) gets a quote before it.

    Quoting a leading quote too keeps it reversible (`csv_value`), so a
    resumed run still recognises every path it wrote.
    """
    if isinstance(value, str) and value.startswith((*_FORMULA_STARTS, "'")):
        return "'" + value
    return value


def csv_value(cell: str) -> str:
    """The text `csv_cell` was given."""
    return cell[1:] if cell.startswith("'") else cell


def encode_rows(rows: Iterable[Record], fmt: str, header: bool = False, fields: Sequence[str] = FIELDS) -> str:
    buf = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buf, lineterminator="\n")
        if header:
            writer.writerow(fields)
        for r in rows:
            d = r.as_dict()
            writer.writerow(["" if d[k] is None else csv_cell(d[k]) for k in fields])
    else:
        for r in rows:
            buf.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")
    return buf.getvalue()


def read_rows(path: str, fmt: str, fields: Sequence[str] = FIELDS) -> list[dict]:
    """Parse a results file written by ResultWriter (ignoring a torn last line)."""
    with open(path, encoding="utf-8", newline="") as f:
        return parse_rows(f.read(), fmt, fields, path)


def parse_rows(text: str, fmt: str, fields: Sequence[str] = FIELDS, path: str = "results") -> list[dict]:
    """Parse a results file's text, `path` naming it in errors (see `read_rows`)."""
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        if text and tuple(reader.fieldnames or ()) != tuple(fields):
            raise OutputError(f"{path}: not this kind of malaria-edge CSV (header {reader.fieldnames}, expected {list(fields)})")
        return [{k: csv_value(v) if isinstance(v, str) else v for k, v in row.items()} for row in reader]
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise OutputError(f"{path}:{i}: not a JSON line; is this a CSV file? (use --format csv)") from None
        if not isinstance(row, dict) or not set(fields) <= row.keys():
            raise OutputError(f"{path}:{i}: not this kind of malaria-edge JSON line (expected the keys {', '.join(fields)})")
        rows.append(row)
    return rows


def provenance_path(output: str | os.PathLike) -> str:
    return f"{os.fspath(output)}.provenance.json"


def maker_changes(path: str | os.PathLike, record: dict, keys: Iterable[str]) -> str | None:
    """In words, what `record` changes on `keys` from the record already at `path`; None when nothing does, or there is none.

    E.g. "threshold 0.8433 (this run: 0.9482)". A record that cannot be read
    (torn by an older app's write) differs on every key.
    """
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            before = json.load(f)
    except (OSError, ValueError):
        before = {}
    changed = [k for k in keys if before.get(k) != record.get(k)]
    return ", ".join(f"{_MAKER_NAMES.get(k, k)} {_shown(k, before.get(k))} (this run: {_shown(k, record.get(k))})"
                     for k in changed) or None


_MAKER_NAMES = {"model_sha256": "model", "detector_sha256": "detector", "stain_cell_colour": "stain reference"}


def _shown(key: str, value) -> str:
    if value is None:
        return "none"
    if key == "threshold":
        return f"{float(value):.4f}"
    if key.endswith("sha256"):
        return "classical segmentation" if value == "classical" else f"sha256 {str(value)[:12]}"
    return str(value)


def record_provenance(output: str | os.PathLike, record: dict, resume: bool) -> None:
    """Write beside a results file which app and model made it, at which threshold; a resumed file keeps its maker.

    Rows made by two models, or at two thresholds, in one file cannot be
    told apart afterwards, so continuing a file with another model or
    threshold is refused.
    """
    path = provenance_path(output)
    changes = maker_changes(path, record, ("model_sha256", "threshold")) if resume else None
    if changes:
        raise OutputError(f"{output} was written with {changes}: write to a new file")
    write_atomic(path, json.dumps(record, indent=1))


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace a file's contents all at once: written to a temporary file beside it, synced, then renamed over it.

    A power cut leaves the old file or the new one, never a torn one that a
    later `--resume` would fail to read.
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a crashed writer's leftover, or a planted link: never written through
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, RESULTS_MODE), "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)  # the rename itself is durable once the folder is synced
    except OSError:
        pass
    finally:
        os.close(fd)


class ResultWriter:
    """Appends rows to a file (durably, resumable) or to stdout.

    `fields` are the columns; the first names the input, which is how a
    resumed run knows what is already done.
    """

    def __init__(self, path: str | None, fmt: str, resume: bool = False, overwrite: bool = False,
                 sync_interval: float = 1.0, fields: Sequence[str] = FIELDS):
        if fmt not in FORMATS:
            raise OutputError(f"unknown format {fmt!r}; expected one of {FORMATS}")
        self.path = path
        self.fmt = fmt
        self.fields = tuple(fields)
        self.sync_interval = sync_interval
        self.previous: list[dict] = []
        self._last_sync = time.monotonic()
        self._stream: IO[str] | None = None
        self._fd: int | None = None
        if path is None:
            if resume:
                raise OutputError("--resume needs --output FILE: there is nothing to resume on stdout")
            self._stream = sys.stdout
            self._stream.write(encode_rows((), fmt, header=True, fields=self.fields))
            return
        exists = os.path.exists(path) and os.path.getsize(path) > 0
        if exists and not (resume or overwrite):
            raise OutputError(f"{path} already exists: add --resume to continue it or --overwrite to replace it")
        if exists and resume:
            _cut_torn_line(path)
            self.previous = read_rows(path, fmt, self.fields)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            if os.path.getsize(path) == 0:  # the cut took a torn header
                self._write(encode_rows((), fmt, header=True, fields=self.fields))
        else:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, RESULTS_MODE)
            self._write(encode_rows((), fmt, header=True, fields=self.fields))
            self.sync()

    @property
    def done_paths(self) -> set[str]:
        return {r[self.fields[0]] for r in self.previous}

    def _write(self, text: str) -> None:
        if not text:
            return
        if self._fd is None:
            assert self._stream is not None
            self._stream.write(text)
            self._stream.flush()
            return
        data = text.encode("utf-8")
        while data:  # one write() in practice; loop only for a short write
            data = data[os.write(self._fd, data):]

    def write(self, rows: Sequence[Record]) -> None:
        self._write(encode_rows(rows, self.fmt, fields=self.fields))
        if self._fd is not None and time.monotonic() - self._last_sync >= self.sync_interval:
            self.sync()

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_torn_line(path: str) -> None:
    """Drop a partial last line (a power cut mid-write) so appended rows start on a fresh line."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


_held = threading.local()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold a slide folder's lock: a count and a review writing the same slide's files take turns (flock: released by
    the kernel when a holder is killed, so a crash never leaves the folder locked).

    Re-entrant within a thread, so a step that needs the folder held across
    several writes (a review decision, its summary and the register) can
    call functions that take the lock themselves.
    """
    key = os.path.realpath(folder)
    held = _held.__dict__.setdefault("folders", set())
    if key in held:
        yield
        return
    fd = open_in(folder, ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.add(key)
        yield
    finally:
        held.discard(key)
        os.close(fd)


def open_in(folder: str | os.PathLike, relative: str | os.PathLike, flags: int = os.O_RDONLY, mode: int = RESULTS_MODE) -> int:
    """A file descriptor for `relative` inside a slide folder, through no symbolic link below the folder (OSError,
    ELOOP, when one is there): a link planted in a slide folder must not make `serve` read or write elsewhere."""
    parts = Path(relative).parts
    if not parts or any(p in ("..", "/") for p in parts):
        raise ValueError(f"{relative!r} is not a path inside the folder")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    finally:
        os.close(fd)


def read_in(folder: str | os.PathLike, relative: str | os.PathLike) -> bytes:
    """A slide folder's file, whole, read through no symbolic link (`open_in`)."""
    with open(open_in(folder, relative), "rb") as f:
        return f.read()
