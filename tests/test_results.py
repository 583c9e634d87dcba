import csv
import json

import pytest

from edge_app.results import FIELDS, OutputError, ResultWriter, Row, read_rows

ROWS = [Row("a.png", "Parasitized", 0.91234567, "ok"), Row("b,with comma.png", None, None, "error", "not an image")]


def test_csv_schema(tmp_path):
    out = tmp_path / "r.csv"
    with ResultWriter(str(out), "csv") as w:
        w.write(ROWS)
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == FIELDS
    assert rows[1] == ["a.png", "Parasitized", "0.912346", "ok", ""]
    assert rows[2] == ["b,with comma.png", "", "", "error", "not an image"]


def test_jsonl_schema(tmp_path):
    out = tmp_path / "r.jsonl"
    with ResultWriter(str(out), "jsonl") as w:
        w.write(ROWS)
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert lines == [
        {"path": "a.png", "label": "Parasitized", "probability": 0.912346, "status": "ok", "error": None},
        {"path": "b,with comma.png", "label": None, "probability": None, "status": "error", "error": "not an image"},
    ]


def test_existing_output_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "r.csv"
    with ResultWriter(str(out), "csv") as w:
        w.write(ROWS[:1])
    with pytest.raises(OutputError, match="--resume"):
        ResultWriter(str(out), "csv")
    with ResultWriter(str(out), "csv", overwrite=True) as w:
        assert w.done_paths == set()
    assert read_rows(str(out), "csv") == []


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_resume_cuts_a_torn_last_line_and_appends(tmp_path, fmt):
    out = tmp_path / f"r.{fmt}"
    with ResultWriter(str(out), fmt) as w:
        w.write(ROWS[:1])
    with open(out, "a") as f:
        f.write('half a ro')  # a power cut mid-write
    with ResultWriter(str(out), fmt, resume=True) as w:
        assert w.done_paths == {"a.png"}
        w.write(ROWS[1:])
    assert [r["path"] for r in read_rows(str(out), fmt)] == ["a.png", "b,with comma.png"]


def test_resume_of_a_file_with_only_a_torn_header(tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("path,lab")
    with ResultWriter(str(out), "csv", resume=True) as w:
        w.write(ROWS[:1])
    assert [r["path"] for r in read_rows(str(out), "csv")] == ["a.png"]


def test_resume_with_the_wrong_format_is_refused(tmp_path):
    out = tmp_path / "r.csv"
    with ResultWriter(str(out), "csv") as w:
        w.write(ROWS)
    with pytest.raises(OutputError, match="JSON"):
        ResultWriter(str(out), "jsonl", resume=True)


def test_resume_needs_a_file():
    with pytest.raises(OutputError, match="--output"):
        ResultWriter(None, "csv", resume=True)


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped_and_read_back(tmp_path):
    out = tmp_path / "r.csv"
    names = ["=HYPERLINK(\"http://x\").png", "+1.png", "-2.png", "@SUM(A1).png", "'quoted.png", "plain.png"]
    with ResultWriter(str(out), "csv") as w:
        w.write([Row(n, None, None, "error", "=cmd|' /C calc'!A0") for n in names])
    with open(out, newline="") as f:
        cells = list(csv.reader(f))[1:]
    assert [c[0] for c in cells] == ["'" + n for n in names[:5]] + ["plain.png"]
    assert all(c[4].startswith("'=") for c in cells)
    assert [r["path"] for r in read_rows(str(out), "csv")] == names  # a resume still knows every path it wrote
    with ResultWriter(str(out), "csv", resume=True) as w:
        assert w.done_paths == set(names)


def test_a_jsonl_file_of_other_records_is_not_resumed(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"file": "a.png", "result": 1}\n')
    with pytest.raises(OutputError, match="expected the keys path, label"):
        ResultWriter(str(out), "jsonl", resume=True)


def test_results_are_readable_by_their_owner_only(tmp_path):
    import os
    import stat

    from edge_app.results import write_atomic

    out = tmp_path / "r.csv"
    with ResultWriter(str(out), "csv") as w:
        w.write(ROWS)
    write_atomic(tmp_path / "summary.json", "{}")
    for path in (out, tmp_path / "summary.json"):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, oct(os.stat(path).st_mode)
