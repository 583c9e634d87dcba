"""`malaria-edge smear` and `capture`: a slide's folder, counts, resume, report, and bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from benchmarks.synthetic_fields import compose_field
from edge_app.cli import main
from edge_app.results import read_rows
from edge_app.slide import CELL_FIELDS
from tests.conftest import BLUE, RED, cell


def run(*args, input=None):
    """The CLI; slides are counted with classical segmentation, which finds the composed fields' cells exactly
    (the learned detector is tested on real fields by benchmarks/real_fields.py, and below with a tiny detector)."""
    args = [str(a) for a in args]
    if args[0] in ("smear", "capture") and "--detector" not in args:
        args += ["--segmenter", "classical"]
    return CliRunner().invoke(main, args, input=input)


@pytest.fixture
def fields(tmp_path) -> tuple[Path, int, int]:
    """Three field images; returns the folder, the number of cells and of red (Parasitized) cells placed."""
    folder = tmp_path / "fields"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cells = reds = 0
    for f in range(3):
        cs = [(np.asarray(cell(RED if i % 6 == 0 else BLUE, (44, 50), seed=i)), "Parasitized" if i % 6 == 0 else "Uninfected")
              for i in range(60)]
        field, truth = compose_field(cs, (420, 640), rng)
        Image.fromarray(field).save(folder / f"field{f}.png")
        cells += len(truth)
        reds += sum(t.label == "Parasitized" for t in truth)
    return folder, cells, reds


def test_smear_counts_a_slide_and_writes_its_folder(fields, tiny_model, tmp_path):
    folder, cells, reds = fields
    out = tmp_path / "slide"
    res = run("smear", folder, "--out", out, "--model", tiny_model)
    assert res.exit_code == 0, res.output
    rows = read_rows(str(out / "cells.csv"), "csv", CELL_FIELDS)
    assert len(rows) == cells and sum(r["label"] == "Parasitized" for r in rows) == reds
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"]["cells"] == cells and summary["total"]["parasitized"] == reds
    assert summary["app"].startswith("malaria-edge ") and summary["model_version"] == "unversioned"
    assert out.stat().st_mode & 0o077 == 0 and (out / "cells.csv").stat().st_mode & 0o077 == 0  # patients' data: owner only
    assert summary["total"]["parasitemia"] == pytest.approx(reds / cells)
    lo, hi = summary["total"]["ci95"]
    assert lo < reds / cells < hi
    assert summary["total"]["reliable"] is False and "capture more fields" in summary["total"]["warning"]
    assert len(list((out / "annotated").glob("*.png"))) == 3
    assert len(list((out / "parasitized").glob("*.png"))) == reds
    page = (out / "report.html").read_text()
    assert f"{100 * reds / cells:.2f} %" in page and page.count("data:image/png;base64,") == reds
    assert page.count("data:image/jpeg;base64,") == 3 and "annotated/" not in page and "capture more fields" in page
    first = next(r for r in rows if r["label"] == "Parasitized")
    assert page.count("<figcaption><span title=\"field") == reds
    name = first['field'].rsplit('/', 1)[-1]
    assert f'<figcaption><span title="{name}">{name}</span>P = {float(first["probability"]):.2f}</figcaption>' in page
    field0 = json.loads((out / "summary.json").read_text())["fields"][0]
    assert f"<td>{100 * field0['ci95'][0]:.2f} % to {100 * field0['ci95'][1]:.2f} %</td>" in page
    linked = run("smear", folder, "--out", tmp_path / "linked", "--model", tiny_model, "--no-embed")
    page = (tmp_path / "linked" / "report.html").read_text()
    assert linked.exit_code == 0 and "data:image/jpeg" not in page and 'href="annotated/0000-field0.png"' in page
    assert "field 3/3 field2.png" in res.output and "cells flagged as possibly infected" in res.output
    assert f"review: {summary['review']['cells_to_review']} cells for a microscopist" in res.output
    assert res.output.count(" left]") == 2 and "field 1/3" in res.output.split(" left]")[0]  # a time estimate while fields remain


def test_annotated_field_marks_parasitized_cells_thick_and_vermillion(fields, tiny_model, tmp_path):
    folder, _, _ = fields
    run("smear", folder / "field0.png", "--out", tmp_path / "s", "--model", tiny_model)
    rows = [r for r in read_rows(str(tmp_path / "s" / "cells.csv"), "csv", CELL_FIELDS) if r["label"] == "Parasitized"]
    img = np.asarray(Image.open(tmp_path / "s" / "annotated" / "0000-field0.png"))
    x, y = int(rows[0]["x"]), int(rows[0]["y"])
    assert img[y - 1, x + 5].tolist() == img[y - 2, x + 5].tolist() == [213, 94, 0]  # the box's top edge, 2 lines thick
    healthy = [r for r in read_rows(str(tmp_path / "s" / "cells.csv"), "csv", CELL_FIELDS) if r["label"] == "Uninfected"]
    hx, hy = int(healthy[0]["x"]), int(healthy[0]["y"])
    assert img[hy - 1, hx + 5].tolist() == [0, 158, 115] and img[hy - 2, hx + 5].tolist() != [0, 158, 115]


def test_bad_field_is_reported_and_the_slide_goes_on(fields, tiny_model, tmp_path):
    folder, cells, reds = fields
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "blank.png").write_bytes(b"")
    res = run("smear", folder, "--out", tmp_path / "s", "--model", tiny_model)
    assert res.exit_code == 1
    assert "broken.png: ERROR" in res.output and "blank.png: ERROR empty file" in res.output
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["total"]["cells"] == cells
    assert sum(1 for f in summary["fields"] if f["error"]) == 2


def test_resume_counts_each_field_once(fields, tiny_model, tmp_path):
    folder, cells, reds = fields
    out = tmp_path / "slide"
    assert run("smear", folder / "field0.png", "--out", out, "--model", tiny_model).exit_code == 0
    refused = run("smear", folder, "--out", out, "--model", tiny_model)
    assert refused.exit_code == 2 and "--resume" in refused.output
    res = run("smear", folder, "--out", out, "--model", tiny_model, "--resume")
    assert res.exit_code == 0 and "resuming: 1 field already counted, 2 to count" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"]["cells"] == cells and len(summary["fields"]) == 3
    assert sorted(p.name for p in (out / "annotated").glob("*.png")) == ["0000-field0.png", "0001-field1.png", "0002-field2.png"]
    # Counting more fields of the slide at another threshold would mix two counts: refused.
    (folder / "more").mkdir()
    (folder / "field0.png").rename(folder / "more" / "field0.png")
    mixed = run("smear", folder / "more", "--out", out, "--model", tiny_model, "--resume", "--threshold", 0.9)
    assert mixed.exit_code == 2 and "threshold 0.5000 (this run: 0.9000)" in mixed.output and "{" not in mixed.output


def test_blank_field_is_counted_as_empty(tiny_model, tmp_path):
    Image.new("RGB", (300, 200), (228, 218, 226)).save(tmp_path / "blank.png")
    res = run("smear", tmp_path / "blank.png", "--out", tmp_path / "s", "--model", tiny_model, "--format", "jsonl")
    assert res.exit_code == 0 and "0 cells" in res.output and "slide: no red cells found in any field" in res.output
    assert [r["status"] for r in read_rows(str(tmp_path / "s" / "cells.jsonl"), "jsonl", CELL_FIELDS)] == ["empty"]


def test_capture_replay_without_a_terminal_goes_straight_on(fields, tiny_model, tmp_path):
    folder, _, _ = fields
    res = run("capture", "--fields", 2, "--replay", folder, "--out", tmp_path / "s", "--model", tiny_model)
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "s" / "fields").iterdir())) == 2 and "Enter" not in res.output
    camera = run("capture", "--fields", 2, "--out", tmp_path / "c", "--model", tiny_model)
    assert camera.exit_code == 2 and "give --interval SECONDS" in camera.output


def test_smear_missing_path_exits_2(tmp_path, tiny_model):
    res = run("smear", tmp_path / "nowhere", "--out", tmp_path / "s", "--model", tiny_model)
    assert res.exit_code == 2 and "no such file" in res.output


def test_capture_from_replay_saves_and_counts_every_field(fields, tiny_model, tmp_path):
    folder, cells, reds = fields
    out = tmp_path / "slide"
    res = run("capture", "--fields", 2, "--interval", 0, "--replay", folder, "--out", out, "--model", tiny_model)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "fields").iterdir()) == ["field-0001.png", "field-0002.png"]
    # The saved frames are the camera's frames, losslessly: re-counting them gives the same cells.
    assert np.array_equal(np.asarray(Image.open(out / "fields" / "field-0001.png")), np.asarray(Image.open(folder / "field0.png")))
    again = run("smear", out / "fields", "--out", tmp_path / "recount", "--model", tiny_model)
    assert again.exit_code == 0
    a = json.loads((out / "summary.json").read_text())["total"]
    b = json.loads((tmp_path / "recount" / "summary.json").read_text())["total"]
    assert a == b and a["cells"] > 0
    # A later session adds fields to the same slide, numbered on.
    more = run("capture", "--fields", 1, "--interval", 0, "--replay", folder, "--out", out, "--model", tiny_model, "--resume")
    assert more.exit_code == 0 and (out / "fields" / "field-0003.png").exists()
    assert json.loads((out / "summary.json").read_text())["total"]["cells"] > a["cells"]


def test_capture_waits_for_enter_and_q_stops(fields, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr("edge_app.cli._interactive", lambda: True)
    folder, _, _ = fields
    out = tmp_path / "slide"
    res = run("capture", "--fields", 3, "--replay", folder, "--out", out, "--model", tiny_model, input="\nq\n")
    assert res.exit_code == 0, res.output
    assert res.output.count("Move to the next field") == 2
    assert len(list((out / "fields").iterdir())) == 2 and (out / "report.html").exists()


def test_capture_without_picamera2_exits_2_with_the_install_hint(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    res = run("capture", "--fields", 1, "--interval", 0, "--out", tmp_path / "s", "--model", tiny_model)
    assert res.exit_code == 2 and "python3-picamera2" in res.output


def test_capture_running_out_of_frames_keeps_what_was_counted(fields, tiny_model, tmp_path):
    folder, _, _ = fields
    res = run("capture", "--fields", 5, "--interval", 0, "--replay", folder, "--out", tmp_path / "s", "--model", tiny_model)
    assert res.exit_code == 1 and "all 3 images were used" in res.output
    assert len(json.loads((tmp_path / "s" / "summary.json").read_text())["fields"]) == 3


def test_bad_resolution_is_a_usage_error(tmp_path, tiny_model):
    res = run("capture", "--fields", 1, "--resolution", "big", "--out", tmp_path / "s", "--model", tiny_model)
    assert res.exit_code == 2 and "WIDTHxHEIGHT" in res.output


def test_counting_block_sets_the_threshold_and_corrects_the_parasitemia(fields, model_copy, tmp_path):
    folder, cells, reds = fields
    side = model_copy.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["counting"] = {"threshold": 0.6, "sensitivity": 0.9, "false_positive_rate": 0.05}
    side.write_text(json.dumps(meta))
    res = run("smear", folder, "--out", tmp_path / "c", "--model", model_copy)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    total = summary["total"]
    assert summary["threshold"] == 0.6
    assert total["raw_parasitemia"] == pytest.approx(reds / cells)
    assert total["parasitemia"] == pytest.approx((reds / cells - 0.05) / 0.85)
    assert "Corrected for the counting pipeline&#x27;s error rates" in (tmp_path / "c" / "report.html").read_text()
    lo, hi = total["ci95"]  # the automatic figure printed is the corrected one, beside the cells flagged awaiting review
    assert (f"slide: {total['parasitized']:,} of {cells:,} cells flagged as possibly infected ({100 * reds / cells:.2f} %): "
            "the figure awaits a microscopist's review") in res.output
    assert f"automatic estimate {100 * total['parasitemia']:.2f} % (95 % CI {100 * lo:.2f}-{100 * hi:.2f} %)" in res.output
    # A threshold typed by hand has no measured error rates: the count is reported raw.
    res = run("smear", folder, "--out", tmp_path / "r", "--model", model_copy, "--threshold", 0.5)
    raw = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert raw["threshold"] == 0.5 and raw["total"]["corrected_for"] is None
    assert raw["total"]["parasitemia"] == pytest.approx(reds / cells)


def test_overwrite_starts_the_slide_afresh(fields, tiny_model, tmp_path):
    folder, _, _ = fields
    out = tmp_path / "slide"
    assert run("smear", folder, "--out", out, "--model", tiny_model).exit_code == 0
    res = run("smear", folder / "field1.png", "--out", out, "--model", tiny_model, "--overwrite")
    assert res.exit_code == 0
    assert [p.name for p in (out / "annotated").iterdir()] == ["0000-field1.png"]
    rows = read_rows(str(out / "cells.csv"), "csv", CELL_FIELDS)
    assert {r["field"] for r in rows} == {str(folder / "field1.png")}
    assert len(list((out / "parasitized").iterdir())) == sum(r["label"] == "Parasitized" for r in rows)


def test_capture_interrupted_keeps_the_fields_and_exits_130(fields, tiny_model, tmp_path, monkeypatch):
    from edge_app import camera

    folder, _, _ = fields
    real = camera.ReplayCamera.capture
    taken = []

    def capture_then_ctrl_c(self):
        if taken:
            raise KeyboardInterrupt
        taken.append(1)
        return real(self)

    monkeypatch.setattr(camera.ReplayCamera, "capture", capture_then_ctrl_c)
    res = run("capture", "--fields", 3, "--interval", 0, "--replay", folder, "--out", tmp_path / "s", "--model", tiny_model)
    assert res.exit_code == 130 and "interrupted" in res.output
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert len(summary["fields"]) == 1 and summary["total"]["cells"] > 0


def test_smear_and_capture_run_offline_without_tensorflow(fields, tiny_model, tiny_detector, tmp_path):
    pytest.importorskip("tensorflow")  # only meaningful where tensorflow could be imported
    import subprocess

    from tests.conftest import REPO
    from tests.test_cli import OFFLINE_RUNNER

    folder, cells, _ = fields
    for args in (["smear", folder, "--out", tmp_path / "s", "--segmenter", "classical"],
                 ["smear", folder, "--out", tmp_path / "d", "--detector", tiny_detector],
                 ["capture", "--fields", 2, "--interval", 0, "--replay", folder, "--out", tmp_path / "c"]):
        res = subprocess.run([sys.executable, "-c", OFFLINE_RUNNER, *map(str, args), "--model", str(tiny_model)],
                             capture_output=True, text=True, cwd=REPO)
        assert res.returncode == 0, res.stderr
        assert "NETWORK_ATTEMPTS 0 HEAVY_MODULES []" in res.stderr
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["total"]["cells"] == cells


def test_smear_with_a_detector_records_it_and_refuses_another_on_resume(tiny_detector, tiny_model, tmp_path):
    from tests.test_detect import _field_with_discs

    folder = tmp_path / "discs"
    folder.mkdir()
    Image.fromarray(_field_with_discs([(64, 64), (200, 72), (320, 180)])).save(folder / "a.png")
    out = tmp_path / "slide"
    res = run("smear", folder, "--out", out, "--model", tiny_model, "--detector", tiny_detector)
    assert res.exit_code == 0, res.output
    rows = read_rows(str(out / "cells.csv"), "csv", CELL_FIELDS)
    assert len(rows) == 3 and all(r["width"] == "64" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert "tiny-detector" in summary["cells_found_by"]
    classical = run("smear", folder, "--out", out, "--model", tiny_model, "--resume", "--segmenter", "classical")
    assert classical.exit_code == 2 and "(this run: classical segmentation)" in classical.output
    both = run("smear", folder, "--out", tmp_path / "x", "--model", tiny_model, "--detector", tiny_detector,
               "--segmenter", "classical")
    assert both.exit_code == 2 and "contradict" in both.output


def test_capture_overwrite_starts_the_slides_frames_afresh(fields, tiny_model, tmp_path):
    folder, _, _ = fields
    out = tmp_path / "slide"
    assert run("capture", "--fields", 3, "--interval", 0, "--replay", folder, "--out", out, "--model", tiny_model).exit_code == 0
    (out / "cells.csv").unlink()  # even with its results gone, the frames of the first patient must not be mixed in
    refused = run("capture", "--fields", 1, "--interval", 0, "--replay", folder, "--out", out, "--model", tiny_model)
    assert refused.exit_code == 2 and "already holds 3 frames" in refused.output
    again = run("capture", "--fields", 1, "--interval", 0, "--replay", folder, "--out", out, "--model", tiny_model, "--overwrite")
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (out / "fields").iterdir()) == ["field-0001.png"]
    assert len(json.loads((out / "summary.json").read_text())["fields"]) == 1


def test_a_torn_counting_record_is_refused_with_a_message(fields, tiny_model, tmp_path):
    folder, _, _ = fields
    out = tmp_path / "slide"
    assert run("smear", folder / "field0.png", "--out", out, "--model", tiny_model).exit_code == 0
    (out / "counting.json").write_text('{"model_sha256": "3e2b')  # cut by a power failure (an older app wrote it in place)
    res = run("smear", folder / "field1.png", "--out", out, "--model", tiny_model, "--resume")
    assert res.exit_code == 2 and "was counted with" in res.output and "Traceback" not in res.output
