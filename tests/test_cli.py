import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_app.cli import main
from edge_app.results import read_rows
from tests.conftest import BLUE, RED, REPO, cell


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def _csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_classify_folder_to_stdout(cells_dir, tiny_model):
    res = run("classify", cells_dir, "--model", tiny_model)
    assert res.exit_code == 0, res.output
    rows = _csv(res.stdout)
    assert len(rows) == 6
    for r in rows:
        assert r["status"] == "ok" and r["error"] == ""
        assert r["label"] == ("Parasitized" if "red" in r["path"] else "Uninfected")
        assert (float(r["probability"]) >= 0.5) == ("red" in r["path"])
    assert "6 images" in res.stderr and "Parasitized: 3" in res.stderr and "errors: 0" in res.stderr


def test_threshold_option_overrides_the_model(cells_dir, tiny_model):
    res = run("classify", cells_dir, "--model", tiny_model, "--threshold", "0.0")
    assert {r["label"] for r in _csv(res.stdout)} == {"Parasitized"}


def test_jsonl_output_file(cells_dir, tiny_model, tmp_path):
    out = tmp_path / "r.jsonl"
    res = run("classify", cells_dir / "red_0.png", cells_dir / "sub", "--model", tiny_model, "-o", out)
    assert res.exit_code == 0, res.output
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["red_0.png", "blue_2.png"]
    assert set(rows[0]) == {"path", "label", "probability", "status", "error"}


def _bad_inputs(folder: Path) -> dict[str, str]:
    """Every kind of bad input next to good ones; returns file name -> expected reason."""
    cell(RED).save(folder / "good_red.png")
    cell(BLUE).save(folder / "good_blue.jpg")
    (folder / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    cell(RED, size=(300, 300)).save(buf, "PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[:400])
    (folder / "text.png").write_text("not really a png\n")
    Image.new("L", (7000, 6000)).save(folder / "huge.png")
    Image.new("I;16", (30, 20)).save(folder / "sixteen.tif")
    Image.new("CMYK", (30, 20), (0, 100, 100, 0)).save(folder / "cmyk.tif")
    Image.new("P", (30, 20)).save(folder / "palette.bmp")
    return {"empty.png": "empty file", "truncated.png": "corrupt image", "text.png": "not an image", "huge.png": "too large"}


def test_bad_inputs_are_reported_and_the_run_continues(tmp_path, tiny_model):
    folder = tmp_path / "mixed"
    folder.mkdir()
    expected = _bad_inputs(folder)
    out = tmp_path / "r.csv"
    res = run("classify", folder, "--model", tiny_model, "-o", out)
    assert res.exit_code == 1, res.output
    rows = {Path(r["path"]).name: r for r in read_rows(str(out), "csv")}
    assert len(rows) == 9
    for name, reason in expected.items():
        assert rows[name]["status"] == "error" and reason in rows[name]["error"], rows[name]
        assert rows[name]["label"] == "" and rows[name]["probability"] == ""
    for name in ("good_red.png", "good_blue.jpg", "sixteen.tif", "cmyk.tif", "palette.bmp"):
        assert rows[name]["status"] == "ok"
    assert rows["good_red.png"]["label"] == "Parasitized" and rows["good_blue.jpg"]["label"] == "Uninfected"
    assert "errors: 4" in res.stderr


def test_explicit_non_image_file_gets_an_error_row(tmp_path, tiny_model):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    res = run("classify", notes, "--model", tiny_model)
    assert res.exit_code == 1
    (row,) = _csv(res.stdout)
    assert row["status"] == "error" and "not an image" in row["error"]


def test_missing_path_exits_2(tmp_path, tiny_model):
    res = run("classify", tmp_path / "nope", "--model", tiny_model)
    assert res.exit_code == 2 and "no such file" in res.output


def test_bad_option_exits_2(cells_dir, tiny_model):
    assert run("classify", cells_dir, "--model", tiny_model, "--threshold", "2").exit_code == 2
    assert run("classify", cells_dir, "--model", tiny_model, "--format", "xml").exit_code == 2


def test_tampered_model_exits_2_with_a_clear_message(cells_dir, model_copy, tmp_path):
    data = bytearray(model_copy.read_bytes())
    data[-10] ^= 1
    model_copy.write_bytes(bytes(data))
    out = tmp_path / "r.csv"
    res = run("classify", cells_dir, "--model", model_copy, "-o", out)
    assert res.exit_code == 2
    assert "does not match its sidecar" in res.output and "reinstall" in res.output
    assert not out.exists()


def test_existing_output_exits_2_without_resume(cells_dir, tiny_model, tmp_path):
    out = tmp_path / "r.csv"
    assert run("classify", cells_dir, "--model", tiny_model, "-o", out).exit_code == 0
    res = run("classify", cells_dir, "--model", tiny_model, "-o", out)
    assert res.exit_code == 2 and "--resume" in res.output
    assert run("classify", cells_dir, "--model", tiny_model, "-o", out, "--overwrite").exit_code == 0
    assert len(read_rows(str(out), "csv")) == 6


def test_resume_skips_what_is_done(cells_dir, tiny_model, tmp_path):
    out = tmp_path / "r.csv"
    assert run("classify", cells_dir / "red_0.png", "--model", tiny_model, "-o", out).exit_code == 0
    res = run("classify", cells_dir, "--model", tiny_model, "-o", out, "--resume")
    assert res.exit_code == 0 and "already done (resumed): 1" in res.stderr
    paths = [r["path"] for r in read_rows(str(out), "csv")]
    assert len(paths) == len(set(paths)) == 6


def test_info_shows_metadata_and_runtime(tiny_model):
    res = run("info", "--model", tiny_model)
    assert res.exit_code == 0, res.output
    assert "ai-edge-litert" in res.stdout or "tflite-runtime" in res.stdout
    assert "16x16" in res.stdout and "threshold" in res.stdout
    assert "int8:        all layers int8" in res.stdout  # the tiny model is converted without float layers


def test_info_with_a_missing_model_exits_2(tmp_path):
    res = run("info", "--model", tmp_path / "x.tflite")
    assert res.exit_code == 2 and "not found" in res.output


def _many_cells(folder: Path, n: int) -> None:
    folder.mkdir()
    for i in range(n):
        cell(RED if i % 3 else BLUE, size=(160, 160), seed=i).save(folder / f"c{i:04d}.png", compress_level=9)


def test_kill_and_resume_loses_nothing_and_repeats_nothing(tmp_path, tiny_model):
    folder = tmp_path / "many"
    _many_cells(folder, 600)
    out = tmp_path / "r.csv"
    cmd = [sys.executable, "-m", "edge_app.cli", "classify", str(folder), "--model", str(tiny_model),
           "-o", str(out), "--threads", "1", "--batch-size", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") > 50:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed; make the inputs heavier"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = read_rows(str(out), "csv")
    assert 50 <= len(partial) < 600
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert f"already done (resumed): {len(partial)}" in res.stderr
    rows = read_rows(str(out), "csv")
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 600
    assert sorted(Path(p).name for p in paths) == sorted(os.listdir(folder))
    assert all(r["status"] == "ok" and r["label"] in ("Parasitized", "Uninfected") for r in rows)


OFFLINE_RUNNER = r"""
import socket, sys
attempts = []
def refuse(*a, **k):
    attempts.append(a)
    raise OSError("network disabled by test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from edge_app.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'requests', 'urllib3'))
    print('NETWORK_ATTEMPTS', len(attempts), 'HEAVY_MODULES', heavy, file=sys.stderr)
"""


def test_runs_offline_without_tensorflow(cells_dir, tiny_model, tmp_path):
    pytest.importorskip("tensorflow")  # only meaningful where tensorflow could be imported
    res = subprocess.run([sys.executable, "-c", OFFLINE_RUNNER, "classify", str(cells_dir), "--model", str(tiny_model)],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "NETWORK_ATTEMPTS 0 HEAVY_MODULES []" in res.stderr
    assert len(_csv(res.stdout)) == 6


def test_progress_bar_only_on_a_terminal(cells_dir, tiny_model):
    import pty

    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "edge_app.cli", "classify", str(cells_dir), "--model", str(tiny_model)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, cwd=REPO)
    os.close(slave)
    out, _ = proc.communicate(timeout=60)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    on_tty = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0 and "Classifying" in on_tty and "6 images" in on_tty
    assert len(_csv(out.decode())) == 6  # results on stdout are untouched by the bar
    piped = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert "Classifying" not in piped.stderr and "6 images" in piped.stderr


def test_an_unreadable_folder_is_a_warning_and_the_rest_is_classified(cells_dir, tiny_model, tmp_path, unreadable_sub):
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(main, ["classify", str(cells_dir), "--model", str(tiny_model), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert f"warning: cannot read folder {cells_dir / 'sub'} (Permission denied)" in res.output
    assert len(_csv(out.read_text())) == 5


def test_a_results_file_names_its_maker_and_is_not_continued_by_another(cells_dir, tiny_model, tmp_path):
    out = tmp_path / "out.csv"
    assert CliRunner().invoke(main, ["classify", str(cells_dir), "--model", str(tiny_model), "--output", str(out)]).exit_code == 0
    record = json.loads((tmp_path / "out.csv.provenance.json").read_text())
    meta = json.loads(tiny_model.with_suffix(".json").read_text())
    assert record["model_sha256"] == meta["tflite_sha256"] and record["threshold"] == meta["threshold"]
    assert record["app"].startswith("malaria-edge ") and record["model_version"] == "unversioned"
    other = CliRunner().invoke(main, ["classify", str(cells_dir), "--model", str(tiny_model), "--output", str(out),
                                      "--resume", "--threshold", "0.9"])
    assert other.exit_code == 2 and "write to a new file" in other.output
    same = CliRunner().invoke(main, ["classify", str(cells_dir), "--model", str(tiny_model), "--output", str(out), "--resume"])
    assert same.exit_code == 0 and "already done (resumed): 6" in same.output


def test_classify_warns_that_a_field_photograph_is_not_a_cell(tmp_path, tiny_model):
    """Reproduces: `PA171690.JPG,Parasitized,0.996` with no warning. A whole field's photograph gets its row (the
    command's contract) and a warning on stderr that says to count it with `smear`; single cells get none."""
    from benchmarks.synthetic_fields import compose_field, drawn_cell

    rng = np.random.default_rng(0)
    field, _ = compose_field([(drawn_cell(rng, False), "") for _ in range(40)], (960, 1280), rng)
    Image.fromarray(field).save(tmp_path / "PA171690.JPG", quality=90)
    cell(RED).save(tmp_path / "cell.png")
    res = CliRunner().invoke(main, ["classify", str(tmp_path), "--model", str(tiny_model)])
    assert res.exit_code == 0, res.stderr
    assert "PA171690.JPG is a whole field (1280x960), not a single cell" in res.stderr and "malaria-edge smear" in res.stderr
    assert "cell.png" not in res.stderr and len(res.stdout.strip().splitlines()) == 3  # header and two rows
