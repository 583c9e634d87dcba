"""benchmarks/site_calibration.py end to end on a few real annotated fields (skipped without ../shared/datasets/iml_malaria).

Its command line and JSON are fixed by issue #33 (it is also run on fields we do not have), so both are checked here on
a small copy of the dataset: the first fields of one or two runs.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import REPO

IML = REPO.parent / "shared" / "datasets" / "iml_malaria"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not (IML / "annotations.json").is_file(), reason="needs ../shared/datasets/iml_malaria")]

FIGURES = {"slides_reviewed", "fields_counted", "true_parasitemia", "parasitemia", "ci95", "abs_relative_error",
           "truth_inside_ci"}


def _subset(tmp_path, per_run: int, runs: tuple[int, ...]):
    """A dataset folder of the first `per_run` fields of each of `runs`, laid out as ../shared/datasets/iml_malaria."""
    from training.fields import runs_of

    entries = json.loads((IML / "annotations.json").read_text())
    grouped = runs_of(sorted(e["image_name"] for e in entries))
    keep = {name for k in runs for name in grouped[k][:per_run]}
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    for name in keep:
        (data / "images" / name).symlink_to(IML / "images" / name)
    (data / "annotations.json").write_text(json.dumps([e for e in entries if e["image_name"] in keep]))
    return data


def test_shipped_models_give_the_issues_json(tmp_path, capsys):
    from benchmarks.site_calibration import main

    data, out = _subset(tmp_path, 8, (0,)), tmp_path / "site.json"
    assert main(["--data", str(data), "--slide-fields", "2", "--reviewed-slides", "2", "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"]["0"]
    for way in ("calibrated", "reviewed", "uncalibrated"):
        assert FIGURES <= set(run[way]), way
        lo, hi = run[way]["ci95"]
        assert 0 <= lo <= run[way]["parasitemia"] <= hi <= 1 or (run[way]["parasitemia"] == 0 and lo == 0)
        assert run[way]["fields_counted"] == 4 and 0 < run[way]["true_parasitemia"] < 0.1
        assert run[way]["truth_inside_ci"] == (lo <= run[way]["true_parasitemia"] <= hi)
    assert run["calibrated"]["slides_reviewed"] == 2 and run["uncalibrated"]["slides_reviewed"] == 0
    # the calibration holds what the two reviewed slides showed, and the count after 0 reviews is the uncalibrated one
    assert run["calibrated"]["calibration"]["slides"] == 2 and run["calibrated"]["calibration"]["cells_reviewed"] > 100
    by_slides = run["calibrated_by_reviewed_slides"]
    assert len(by_slides) == 3 and by_slides[0]["parasitemia"] == run["uncalibrated"]["parasitemia"]
    assert "calibrated" in capsys.readouterr().out


def test_one_classifier_per_run(tmp_path, capsys):
    """--models: each run's cells classified by its own classifier; given the shipped one for every run, the same count
    as --model with the shipped one."""
    from benchmarks.site_calibration import main
    from edge_app.detect import default_detector_path
    from edge_app.model import default_model_path

    data = _subset(tmp_path, 8, (0, 1))
    for k in (0, 1):
        (tmp_path / "det" / f"run{k}").mkdir(parents=True)
        (tmp_path / "det" / f"run{k}" / "cell-detector-int8.tflite").symlink_to(default_detector_path())
        shutil.copy(default_detector_path().with_suffix(".json"), tmp_path / "det" / f"run{k}")
        (tmp_path / "cls" / f"run{k}").mkdir(parents=True)
        (tmp_path / "cls" / f"run{k}" / "malaria-edge-int8.tflite").symlink_to(default_model_path())
        shutil.copy(default_model_path().with_suffix(".json"), tmp_path / "cls" / f"run{k}")
    common = ["--data", str(data), "--slide-fields", "2", "--reviewed-slides", "2", "--detectors", str(tmp_path / "det")]
    assert main(common + ["--models", str(tmp_path / "cls"), "--json", str(tmp_path / "per-run.json")]) == 0
    assert main(common + ["--json", str(tmp_path / "one.json")]) == 0
    per_run, one = (json.loads((tmp_path / name).read_text())["runs"] for name in ("per-run.json", "one.json"))
    assert set(per_run) == {"0", "1"} and per_run == one
    assert "cls/run1/malaria-edge-int8.tflite" in capsys.readouterr().err


def test_models_need_the_fold_detectors(tmp_path, capsys):
    from benchmarks.site_calibration import main

    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(IML), "--models", str(tmp_path)])
    assert exit_.value.code == 2 and "--models needs --detectors" in capsys.readouterr().err
