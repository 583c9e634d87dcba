"""The real-field benchmark end to end on a few real annotated fields (skipped without ../shared/datasets/iml_malaria)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO

IML = REPO.parent / "shared" / "datasets" / "iml_malaria"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not (IML / "annotations.json").is_file(), reason="needs ../shared/datasets/iml_malaria")]


def test_benchmark_scores_the_shipped_pipeline_on_real_fields(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from benchmarks.real_fields import main

    out = tmp_path / "real.json"
    assert main(["--data", str(IML), "--run", "0", "--first", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    run = report["runs"]["0"]
    assert run["fields"] == 4 and run["cells"] > 300
    # the shipped detector finds the red cells of these (training) fields; precision is a lower bound (unboxed cells)
    assert run["recall"] >= 0.9 and run["precision"] >= 0.7
    assert report["classifier_alone"]["roc_auc"] > 0.8
    assert "red cells: recall" in capsys.readouterr().out
