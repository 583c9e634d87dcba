"""The slide register: schema migrations, concurrent and killed writers, rebuilding from folders, and its commands."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from edge_app.cli import main
from edge_app.register import (MIGRATIONS, SCHEMA_VERSION, Filters, RegisterError, connect, export, get_slide,
                               index_slide, list_slides)
from edge_app.review import record_decision
from edge_app.slide import publish, read_summary, slide_review
from tests.conftest import drawn_slide


def test_a_smeared_slide_is_registered_with_its_sample_operator_and_model(tmp_path, tiny_model, private_register):
    out = drawn_slide(tmp_path, tiny_model, 2, "--sample", "P-0042", "--operator", "Ana")
    slides = list_slides(connect(private_register))
    assert len(slides) == 1
    s = slides[0]
    summary = read_summary(out)
    assert (s["sample"], s["operator"], s["folder"]) == ("P-0042", "Ana", str(out.resolve()))
    assert s["id"] == summary["id"] == json.loads((out / "slide.json").read_text())["id"]
    assert (s["fields"], s["cells"], s["parasitized"]) == (2, 48, 8)
    assert s["model_sha256"] == summary["model_sha256"] and s["threshold"] == summary["threshold"]
    assert s["ci_low"] < s["parasitemia"] < s["ci_high"] and s["reliable"] == 0
    assert s["status"] == "counted" and s["review_cells"] == 8 + 12
    conn = connect(private_register)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: a committed slide survives a power cut
    assert private_register.stat().st_mode & 0o077 == 0  # sample codes are patients' data


def test_migrating_a_version_1_register_keeps_its_slides(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    conn.execute("INSERT INTO slides (id, folder, fields, cells, parasitized, raw_parasitemia, parasitemia, ci_low, "
                 "ci_high, reliable, fields_flagged, sample) VALUES ('a', '/x', 1, 10, 1, .1, .1, 0, .4, 0, 0, 'P-1')")
    conn.commit()
    conn.close()
    new = connect(path)
    assert new.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert get_slide(new, "a")["sample"] == "P-1" and get_slide(new, "a")["status"] == "counted"
    assert new.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 0
    assert new.execute("SELECT COUNT(*) FROM calibration_slides").fetchone()[0] == 0  # version 3: the calibration
    connect(path).close()  # opening an up-to-date register again changes nothing
    assert get_slide(connect(path), "a")["sample"] == "P-1"


def test_a_register_from_a_newer_app_is_refused(tmp_path):
    path = tmp_path / "new.sqlite3"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}").connection.commit()
    with pytest.raises(RegisterError, match="newer"):
        connect(path)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    res = CliRunner().invoke(main, ["slides", "list", "--register", str(path)])
    assert res.exit_code == 2 and "cannot open the slide register" in res.output


def _decide_many(register, folder, start, n):
    conn = connect(register)
    summary = read_summary(folder)
    cells = slide_review(folder, summary).cells
    for i in range(start, start + n):
        record_decision(folder, cells[i % len(cells)], "confirm" if i % 2 else "reject", f"r{start}")
        publish(folder)
        index_slide(conn, folder)


def test_concurrent_writers_lose_nothing(tmp_path, tiny_model, private_register):
    """Four processes record decisions on two slides at once, each publishing and indexing after every one."""
    a = drawn_slide(tmp_path, tiny_model, 1, name="a")
    b = drawn_slide(tmp_path, tiny_model, 1, name="b")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_decide_many, args=(str(private_register), str(folder), start, 6))
             for folder, start in ((a, 0), (a, 6), (b, 0), (b, 6))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    conn = connect(private_register)
    for folder in (a, b):
        sid = read_summary(folder)["id"]
        lines = (folder / "review.jsonl").read_text().splitlines()
        assert len(lines) == 12  # every decision's line, none torn
        assert conn.execute("SELECT COUNT(*) FROM decisions WHERE slide_id = ?", (sid,)).fetchone()[0] == 12
        row = get_slide(conn, sid)
        assert row["review_decided"] == 12 == read_summary(folder)["review"]["decided"]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


_KILLED_WRITER = """
import sys, time
from edge_app.register import connect, transaction
conn = connect(sys.argv[1])
with transaction(conn):
    for i in range(100000):
        conn.execute("INSERT INTO slides (id, folder, fields, cells, parasitized, raw_parasitemia, parasitemia, ci_low, "
                     "ci_high, reliable, fields_flagged) VALUES (?, ?, 1, 1, 0, 0, 0, 0, 1, 0, 0)", (f"k{i}", f"/k{i}"))
        if i == 5000:
            print("writing", flush=True)
            time.sleep(60)
"""


def test_a_writer_killed_mid_transaction_leaves_a_consistent_register(tmp_path, tiny_model, private_register):
    drawn_slide(tmp_path, tiny_model, 1)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(private_register)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    conn = connect(private_register)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [s["id"].startswith("k") for s in list_slides(conn)] == [False]  # the slide before it, and none of its rows
    index_slide(conn, tmp_path / "slide")  # and it can be written again at once
    assert len(list_slides(conn)) == 1


def test_rebuild_from_the_folders_restores_slides_and_decisions(tmp_path, tiny_model, private_register):
    a = drawn_slide(tmp_path, tiny_model, 1, "--sample", "S-A", name="a")
    b = drawn_slide(tmp_path, tiny_model, 1, "--sample", "S-B", name="b")
    cell = slide_review(a, read_summary(a)).cells[0]
    record_decision(a, cell, "reject", "Dr K")
    publish(a)
    private_register.unlink()  # the register is lost
    for suffix in ("-wal", "-shm"):
        private_register.with_name(private_register.name + suffix).unlink(missing_ok=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    res = CliRunner().invoke(main, ["slides", "rebuild", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "register rebuilt: 2 slides" in res.output and "broken skipped" in res.output
    conn = connect(private_register)
    by_sample = {s["sample"]: s for s in list_slides(conn)}
    assert set(by_sample) == {"S-A", "S-B"}
    assert by_sample["S-A"]["id"] == read_summary(a)["id"] and by_sample["S-B"]["folder"] == str(b.resolve())
    assert by_sample["S-A"]["review_decided"] == 1 and by_sample["S-A"]["status"] == "in review"
    assert [tuple(r) for r in conn.execute("SELECT decision, reviewer FROM decisions")] == [("reject", "Dr K")]


def test_recounting_a_folder_replaces_its_entry(tmp_path, tiny_model, private_register):
    out = drawn_slide(tmp_path, tiny_model, 1)
    first = read_summary(out)["id"]
    res = CliRunner().invoke(main, ["smear", str(tmp_path / "slide-fields"), "--out", str(out), "--model",
                                    str(tiny_model), "--segmenter", "classical", "--overwrite"])
    assert res.exit_code == 0, res.output
    slides = list_slides(connect(private_register))
    assert [s["id"] for s in slides] == [read_summary(out)["id"]] and slides[0]["id"] != first


def test_filters_and_export(tmp_path, tiny_model, private_register):
    drawn_slide(tmp_path, tiny_model, 1, "--sample", "P-1", name="a")
    drawn_slide(tmp_path, tiny_model, 1, "--sample", "Q_2", name="b")
    conn = connect(private_register)
    assert [s["sample"] for s in list_slides(conn, Filters(sample="P-"))] == ["P-1"]
    assert [s["sample"] for s in list_slides(conn, Filters(sample="_"))] == ["Q_2"]  # LIKE wildcards are literal
    assert [s["sample"] for s in list_slides(conn, Filters(text="q_2"))] == ["Q_2"]  # any case, in any column
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(list_slides(conn, Filters(since=today, until=today))) == 2
    assert list_slides(conn, Filters(until="2000-01-01")) == []
    assert list_slides(conn, Filters(status="reviewed")) == []
    rows = json.loads(export(list_slides(conn), "json"))
    assert {r["sample"] for r in rows} == {"P-1", "Q_2"} and "reviewed_parasitemia" in rows[0]
    csv_text = export(list_slides(conn), "csv")
    assert csv_text.splitlines()[0].startswith("id,sample,operator") and len(csv_text.splitlines()) == 3
    exported = list(csv.DictReader(io.StringIO(csv_text)))  # percent, as every screen shows it, the unit in the header
    by_id = {s["id"]: s for s in list_slides(conn)}
    for row in exported:
        assert float(row["parasitemia_percent"]) == pytest.approx(100 * by_id[row["id"]]["parasitemia"], abs=1e-4)
        assert row["reviewed_parasitemia_percent"] == "" and "parasitemia" not in row


def test_slides_commands(tmp_path, tiny_model):
    out = drawn_slide(tmp_path, tiny_model, 1, "--sample", "=HYPERLINK(1)", "--operator", "Ana")
    sid = read_summary(out)["id"]
    runner = CliRunner()
    listed = runner.invoke(main, ["slides", "list"])
    assert listed.exit_code == 0 and sid in listed.output and "counted" in listed.output
    shown = runner.invoke(main, ["slides", "show", sid])
    assert shown.exit_code == 0 and "operator" in shown.output and "Ana" in shown.output
    assert runner.invoke(main, ["slides", "show", "nope"]).exit_code == 2
    csv_out = tmp_path / "slides.csv"
    assert runner.invoke(main, ["slides", "export", "-o", str(csv_out)]).exit_code == 0
    assert "'=HYPERLINK(1)" in csv_out.read_text()  # a spreadsheet formula stays text
    as_json = runner.invoke(main, ["slides", "export", "--format", "json", "--status", "counted"])
    assert json.loads(as_json.output)[0]["id"] == sid
    assert runner.invoke(main, ["slides", "list", "--since", "yesterday"]).exit_code == 2


def test_an_unwritable_register_costs_a_warning_not_the_count(tmp_path, tiny_model, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("MALARIA_EDGE_REGISTER", str(blocker / "register.sqlite3"))  # its folder is a file
    out = drawn_slide(tmp_path, tiny_model, 1)
    assert (out / "summary.json").exists()
    res = CliRunner().invoke(main, ["smear", str(tmp_path / "slide-fields"), "--out", str(tmp_path / "again"),
                                    "--model", str(tiny_model), "--segmenter", "classical"])
    assert res.exit_code == 0 and "slide not added to the register" in res.output and "slides rebuild" in res.output


def test_a_folder_from_before_slide_ids_keeps_one_id_through_rebuild_and_resume(tmp_path, tiny_model, private_register):
    out = drawn_slide(tmp_path, tiny_model, 1)
    (out / "slide.json").unlink()  # as an older release left it
    assert CliRunner().invoke(main, ["slides", "rebuild", str(tmp_path)]).exit_code == 0
    (rebuilt,) = list_slides(connect(private_register))
    res = CliRunner().invoke(main, ["smear", str(tmp_path / "slide-fields"), "--out", str(out), "--model",
                                    str(tiny_model), "--segmenter", "classical", "--resume", "--sample", "late"])
    assert res.exit_code == 0, res.output
    (resumed,) = list_slides(connect(private_register))
    assert resumed["id"] == rebuilt["id"] == json.loads((out / "slide.json").read_text())["id"]
    assert resumed["sample"] == "late"
