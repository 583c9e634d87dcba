"""The slide register: one SQLite database that remembers every slide counted on this device, and its review.

It is an index, not the record: each slide's folder holds the cells, the
summary and the review decisions (edge_app.slide, edge_app.review), and
`index_slide` copies what a list or an export needs from there. So a lost
or damaged register is rebuilt from the folders (`rebuild`), and a register
write that fails never costs a count.

SQLite in WAL mode with `synchronous=FULL`: a committed slide survives a
power cut, readers (the web app) never block the writer (a `capture`), and
a writer killed mid-transaction leaves the database as it was before it.
The schema carries its version (`PRAGMA user_version`); `MIGRATIONS` bring
an older register up to date when it is opened.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable, Iterable, Iterator

from edge_app.calibration import Calibration, Evidence, evidence, slide_stain
from edge_app.results import csv_cell, folder_lock
from edge_app.review import read_decisions
from edge_app.slide import SUMMARY_FILE, publish, read_checks_stats, read_identity, read_summary, slide_review

ENV_VAR = "MALARIA_EDGE_REGISTER"
STATUSES = ("counted", "in review", "reviewed")

#: Each entry takes the schema from version i to i + 1; never edit one that has shipped, append another.
MIGRATIONS = (
    # 1: the slides as counted
    """
    CREATE TABLE slides (
        id TEXT PRIMARY KEY,
        folder TEXT NOT NULL UNIQUE,
        sample TEXT, operator TEXT, started TEXT, counted TEXT,
        model TEXT, model_version TEXT, model_sha256 TEXT, threshold REAL, detector TEXT,
        fields INTEGER NOT NULL, cells INTEGER NOT NULL, parasitized INTEGER NOT NULL,
        raw_parasitemia REAL NOT NULL, parasitemia REAL NOT NULL, ci_low REAL NOT NULL, ci_high REAL NOT NULL,
        reliable INTEGER NOT NULL, fields_flagged INTEGER NOT NULL
    );
    CREATE INDEX slides_counted ON slides (counted);
    CREATE INDEX slides_sample ON slides (sample);
    """,
    # 2: the microscopist's review
    """
    ALTER TABLE slides ADD COLUMN status TEXT NOT NULL DEFAULT 'counted';
    ALTER TABLE slides ADD COLUMN review_decided INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE slides ADD COLUMN review_cells INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE slides ADD COLUMN reviewed_parasitemia REAL;
    ALTER TABLE slides ADD COLUMN reviewed_ci_low REAL;
    ALTER TABLE slides ADD COLUMN reviewed_ci_high REAL;
    ALTER TABLE slides ADD COLUMN reviewers TEXT;
    ALTER TABLE slides ADD COLUMN last_decision TEXT;
    CREATE TABLE decisions (
        slide_id TEXT NOT NULL REFERENCES slides (id) ON DELETE CASCADE,
        cell TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('confirm', 'reject')),
        reviewer TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        PRIMARY KEY (slide_id, cell)
    );
    CREATE INDEX slides_status ON slides (status);
    """,
    # 3: the laboratory's calibration: what each fully reviewed slide showed (edge_app.calibration.Evidence)
    """
    CREATE TABLE calibration_slides (
        slide_id TEXT PRIMARY KEY REFERENCES slides (id) ON DELETE CASCADE,
        reviewed TEXT NOT NULL, model_sha256 TEXT NOT NULL, threshold REAL NOT NULL,
        cells INTEGER NOT NULL, flagged INTEGER NOT NULL, flagged_rejected INTEGER NOT NULL,
        parasites INTEGER NOT NULL, parasites_flagged INTEGER NOT NULL,
        stain_r REAL, stain_g REAL, stain_b REAL
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

#: What `export` writes, in this order: everything a lab's records need, nothing about single cells.
EXPORT_COLUMNS = ("id", "sample", "operator", "started", "counted", "folder", "model", "model_version", "model_sha256",
                  "threshold", "detector", "fields", "cells", "parasitized", "raw_parasitemia", "parasitemia", "ci_low",
                  "ci_high", "reliable", "fields_flagged", "status", "review_decided", "review_cells",
                  "reviewed_parasitemia", "reviewed_ci_low", "reviewed_ci_high", "reviewers", "last_decision")


class RegisterError(RuntimeError):
    """The register cannot be opened or is not one."""


def default_register_path() -> Path:
    """$MALARIA_EDGE_REGISTER, else the user's data directory (XDG): ~/.local/share/malaria-edge/register.sqlite3."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "malaria-edge" / "register.sqlite3"


def connect(path: str | os.PathLike | None = None) -> sqlite3.Connection:
    """Open (creating if needed) the register and bring its schema up to date."""
    path = Path(path) if path else default_register_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # patients' sample codes: owner-only from the start
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)  # transactions are explicit (BEGIN IMMEDIATE)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn)
    except (sqlite3.Error, OSError) as exc:
        raise RegisterError(f"cannot open the slide register {path}: {exc}") from None
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RegisterError(f"the register has schema version {version}, newer than this app's {SCHEMA_VERSION}: "
                            "upgrade malaria-edge")
    for i in range(version, SCHEMA_VERSION):
        with transaction(conn):
            if conn.execute("PRAGMA user_version").fetchone()[0] != i:  # another process migrated it meanwhile
                continue
            for statement in MIGRATIONS[i].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {i + 1}")


class transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): writers queue for the lock at the start, not half-way."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _slide_record(folder: Path, summary: dict, review: dict) -> dict:
    """The register's row for a slide, from its summary, its review as its decisions give it (not the summary's copy,
    which a crash may have left behind them) and its identity (edge_app.slide.read_identity)."""
    ident = read_identity(folder)
    total = summary["total"]
    lo, hi = total["ci95"]
    rlo, rhi = review.get("ci95") or (None, None)
    return {
        "id": ident["id"], "folder": str(folder), "sample": ident.get("sample"), "operator": ident.get("operator"),
        "started": ident.get("started"), "counted": summary.get("counted"), "model": summary.get("model"),
        "model_version": summary.get("model_version"), "model_sha256": summary.get("model_sha256"),
        "threshold": summary.get("threshold"), "detector": summary.get("cells_found_by"),
        "fields": len(summary["fields"]), "cells": total["cells"], "parasitized": total["parasitized"],
        "raw_parasitemia": total["raw_parasitemia"], "parasitemia": total["parasitemia"], "ci_low": lo, "ci_high": hi,
        "reliable": int(bool(total["reliable"])), "fields_flagged": sum(1 for f in summary["fields"] if f.get("warnings")),
        "status": review.get("status", "counted"), "review_decided": review.get("decided", 0),
        "review_cells": review.get("cells_to_review", 0), "reviewed_parasitemia": review.get("parasitemia"),
        "reviewed_ci_low": rlo, "reviewed_ci_high": rhi, "reviewers": ", ".join(review.get("reviewers") or ()) or None,
        "last_decision": review.get("last_decision"),
    }


def read_slide(folder: str | os.PathLike) -> tuple[dict, list, Evidence | None]:
    """A slide folder's register row, its decisions, and what its review adds to the laboratory's calibration (None
    until it is fully reviewed), read from its files: the review recomputed from review.jsonl."""
    folder = Path(folder).resolve()
    summary = read_summary(folder)
    review = slide_review(folder, summary)
    state = review.as_dict()
    found = evidence(summary, state, slide_stain(read_checks_stats(folder))) if state["status"] == "reviewed" else None
    return _slide_record(folder, summary, state), list(review.decisions.values()), found


def _store(conn: sqlite3.Connection, record: dict, slide_decisions: list, found: Evidence | None = None) -> None:
    """Write one slide's row, decisions and calibration evidence (inside the caller's transaction). A folder counted
    afresh has a new id: its old entry, with the old count's decisions, goes."""
    conn.execute("DELETE FROM slides WHERE folder = ? AND id != ?", (record["folder"], record["id"]))
    updates = ", ".join(f"{k} = excluded.{k}" for k in record if k != "id")
    conn.execute(f"INSERT INTO slides ({', '.join(record)}) VALUES ({', '.join('?' * len(record))}) "
                 f"ON CONFLICT (id) DO UPDATE SET {updates}", tuple(record.values()))
    conn.execute("DELETE FROM decisions WHERE slide_id = ?", (record["id"],))
    conn.executemany("INSERT INTO decisions (slide_id, cell, decision, reviewer, decided_at) VALUES (?, ?, ?, ?, ?)",
                     [(record["id"], d.key, d.decision, d.reviewer, d.at) for d in slide_decisions])
    conn.execute("DELETE FROM calibration_slides WHERE slide_id = ?", (record["id"],))
    if found is not None:
        r, g, b = found.stain or (None, None, None)
        conn.execute("INSERT INTO calibration_slides VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (record["id"], found.reviewed, found.model_sha256, found.threshold, found.cells, found.flagged,
                      found.flagged_rejected, found.parasites, found.parasites_flagged, r, g, b))


#: The settings key holding when the calibration was last reset: reviews before it no longer count.
CALIBRATION_SINCE = "calibration_since"


def site_calibration(conn: sqlite3.Connection, model) -> Calibration | None:
    """This device's laboratory calibration for a classifier (edge_app.model.ModelBundle): the evidence of the slides
    reviewed since the last reset that were counted with this very model at its counting threshold, with its
    shipped rates as the prior; None when the model has no measured counting and review blocks to calibrate."""
    if not (model.counting and model.review and model.counting.errors.measured):
        return None  # rates of unknown provenance (how many cells they were measured on) cannot be a prior
    since = conn.execute("SELECT value FROM settings WHERE key = ?", (CALIBRATION_SINCE,)).fetchone()
    rows = conn.execute("SELECT * FROM calibration_slides WHERE model_sha256 = ? AND abs(threshold - ?) < 1e-9 "
                        "AND reviewed > ? ORDER BY reviewed",
                        (model.meta["tflite_sha256"], model.counting.threshold, since[0] if since else "")).fetchall()
    slides = tuple(Evidence(r["slide_id"], r["reviewed"], r["model_sha256"], r["threshold"], r["cells"], r["flagged"],
                            r["flagged_rejected"], r["parasites"], r["parasites_flagged"],
                            None if r["stain_r"] is None else (r["stain_r"], r["stain_g"], r["stain_b"])) for r in rows)
    return Calibration(slides, model.counting.errors, model.review.errors.sensitivity)


def reset_calibration(conn: sqlite3.Connection, now: str) -> None:
    """Start the laboratory's calibration afresh: the slides reviewed until `now` no longer count (they stay in the
    register, and a rebuild keeps the reset)."""
    with transaction(conn):
        conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                     (CALIBRATION_SINCE, now))


def index_slide(conn: sqlite3.Connection, folder: str | os.PathLike) -> str:
    """Copy a slide folder's summary and review decisions into the register, in one transaction; returns its id.

    Read and written holding the folder's lock, so a count and a review
    indexing the same slide at once leave the register with the later state.
    """
    with folder_lock(folder):
        record, slide_decisions, found = read_slide(folder)
        with transaction(conn):
            _store(conn, record, slide_decisions, found)
    return record["id"]


@dataclass(frozen=True)
class Filters:
    """Which slides to list or export: counted in [since, until] (ISO dates), sample code containing, status."""

    since: str | None = None
    until: str | None = None
    sample: str | None = None
    status: str | None = None
    text: str | None = None  # in the sample code, operator, id or folder

    def where(self) -> tuple[str, list]:
        clauses, args = [], []
        if self.since:
            clauses.append("substr(counted, 1, 10) >= ?")
            args.append(self.since)
        if self.until:
            clauses.append("substr(counted, 1, 10) <= ?")
            args.append(self.until)
        if self.sample:
            clauses.append("sample LIKE ? ESCAPE '\\'")
            args.append(f"%{_like(self.sample)}%")
        if self.status:
            clauses.append("status = ?")
            args.append(self.status)
        if self.text:
            clauses.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in ("sample", "operator", "id", "folder")) + ")")
            args.extend([f"%{_like(self.text)}%"] * 4)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def iso_date(text: str) -> str:
    """A date filter as the register compares it, YYYY-MM-DD (ValueError for anything else)."""
    return date.fromisoformat(text.strip()).isoformat()


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_slides(conn: sqlite3.Connection, filters: Filters = Filters(), limit: int | None = None) -> list[dict]:
    """Slides newest first."""
    where, args = filters.where()
    sql = f"SELECT * FROM slides{where} ORDER BY counted DESC, id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [dict(r) for r in conn.execute(sql, args)]


def get_slide(conn: sqlite3.Connection, slide_id: str) -> dict | None:
    row = conn.execute("SELECT * FROM slides WHERE id = ?", (slide_id,)).fetchone()
    return dict(row) if row else None


def decisions(conn: sqlite3.Connection, slide_id: str) -> list[dict]:
    return [dict(r) for r in conn.execute("SELECT cell, decision, reviewer, decided_at FROM decisions WHERE slide_id = ? "
                                          "ORDER BY decided_at, cell", (slide_id,))]


#: The columns that hold a share of cells: fractions in JSON (for programs), percent in CSV (for people, as every screen
#: shows them), the unit in the column's name.
SHARE_COLUMNS = ("raw_parasitemia", "parasitemia", "ci_low", "ci_high", "reviewed_parasitemia", "reviewed_ci_low",
                 "reviewed_ci_high")


def export(slides: list[dict], fmt: str) -> str:
    """The slides as CSV (one row each, EXPORT_COLUMNS, shares in percent) or JSON (a list of objects, shares as
    fractions)."""
    rows = [{k: s.get(k) for k in EXPORT_COLUMNS} for s in slides]
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    header = [f"{k}_percent" if k in SHARE_COLUMNS else k for k in EXPORT_COLUMNS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([csv_cell(round(100 * r[k], 4) if k in SHARE_COLUMNS and r[k] is not None else r[k]) for k in EXPORT_COLUMNS]
                     for r in rows)
    return buf.getvalue()


def slide_folders(roots: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Every slide folder (one with a summary.json) under the roots, the roots included."""
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d not in ("annotated", "parasitized", "fields"))
            if SUMMARY_FILE in filenames:
                yield Path(dirpath)


def rebuild(conn: sqlite3.Connection, roots: Iterable[str | os.PathLike],
            on_error: Callable[[Path, str], None] = lambda folder, reason: None) -> int:
    """Replace the register's contents with the slide folders under the roots, in one transaction; returns how many.

    The folders are read first, so the register is locked only for the
    writing; a folder that cannot be read is reported through `on_error`
    and left out.
    """
    slides = []
    for folder in slide_folders(roots):
        try:
            slides.append(read_slide(folder))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            on_error(folder, str(exc) or type(exc).__name__)
    with transaction(conn):
        conn.execute("DELETE FROM calibration_slides")
        conn.execute("DELETE FROM decisions")
        conn.execute("DELETE FROM slides")
        for record, slide_decisions, found in slides:
            _store(conn, record, slide_decisions, found)
    return len(slides)


def reconcile(conn: sqlite3.Connection, on_error: Callable[[str, str], None] = lambda slide_id, reason: None) -> int:
    """Bring every registered slide's summary, report and register row up to its review.jsonl, where a crash between
    writing a decision and the rest left them behind; returns how many slides needed it.

    Checked cheaply first (the decisions themselves, and the summary's latest
    decision), so a start-up over hundreds of slides in agreement reads only
    their small review files. A folder that no longer holds its slide is
    reported through `on_error` and left alone: `slides rebuild` is the fix.
    """
    fixed = 0
    for row in conn.execute("SELECT id, folder FROM slides").fetchall():
        slide_id, folder = row["id"], Path(row["folder"])
        try:
            with folder_lock(folder):
                if read_identity(folder)["id"] != slide_id:
                    on_error(slide_id, f"{folder} now holds another slide; run `malaria-edge slides rebuild`")
                    continue
                made = {d.key: (d.decision, d.reviewer, d.at) for d in read_decisions(folder).values()}
                registered = {r["cell"]: (r["decision"], r["reviewer"], r["decided_at"]) for r in
                              conn.execute("SELECT cell, decision, reviewer, decided_at FROM decisions WHERE slide_id = ?",
                                           (slide_id,))}
                summary = read_summary(folder)
                latest = max((at for _, _, at in made.values()), default=None)
                if made == registered and (summary.get("review") or {}).get("last_decision") == latest:
                    continue
                publish(folder)
                index_slide(conn, folder)
                fixed += 1
        except (OSError, ValueError, KeyError, TypeError) as exc:
            on_error(slide_id, str(exc) or type(exc).__name__)
    return fixed
