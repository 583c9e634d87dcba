import json
from dataclasses import replace

import numpy as np
import pytest

from training.crossval import compare_markdown, summarise
from tests.test_training import make_nih_folder


def _fold(acc, auc, fold=0):
    return {"fold": fold, "accuracy@0.5": acc, "accuracy": acc - 0.01, "sensitivity": 0.98, "specificity": 0.9, "roc_auc": auc, "pr_auc": auc}


def test_summary_mean_and_spread():
    s = summarise([_fold(0.96, 0.99), _fold(0.98, 0.995)])
    assert s["accuracy@0.5"]["mean"] == pytest.approx(0.97)
    assert s["accuracy@0.5"]["std"] == pytest.approx(0.01414, abs=1e-4)


def _cv(arch, seed, folds):
    return {"config": {"arch": arch, "seed": seed, "folds": 5, "data": "d"}, "folds": folds}


def test_compare_refuses_different_folds():
    a = _cv("a", 0, [_fold(0.97, 0.99, k) for k in range(2)])
    b = _cv("b", 1, [_fold(0.95, 0.98, k) for k in range(2)])
    with pytest.raises(ValueError, match="seed"):
        compare_markdown(a, b)
    b["config"]["seed"] = 0
    table = compare_markdown(a, b)
    assert "+2.00 pp" in table and "+0.0100" in table and "Folds compared: 0, 1 of 0-4" in table


def test_compare_uses_only_the_folds_both_finished():
    a = _cv("a", 0, [_fold(0.97, 0.99, 0), _fold(0.90, 0.95, 3)])
    b = _cv("b", 0, [_fold(0.95, 0.98, 0), _fold(0.96, 0.99, 1)])
    table = compare_markdown(a, b)
    assert "Folds compared: 0 of 0-4" in table and "+2.00 pp" in table  # fold 3 (a only) and fold 1 (b only) left out
    with pytest.raises(ValueError, match="no finished fold in common"):
        compare_markdown(_cv("a", 0, [_fold(0.97, 0.99, 2)]), b)


def test_cross_validation_runs_every_fold(tmp_path):
    pytest.importorskip("tensorflow")
    from training.crossval import cross_validate
    from training.train import TrainConfig

    root = make_nih_folder(tmp_path / "data", infected=6, healthy=3, cells=3)
    cfg = TrainConfig(data=str(root), arch="baseline-cnn", image_size=32, epochs=1, batch_size=16, folds=3,
                      cache_dir=str(tmp_path / "cache"))
    result = cross_validate(cfg, tmp_path / "cv")
    assert len(result["folds"]) == 3
    tested = set()
    for k in range(3):
        tested |= set(json.loads((tmp_path / "cv" / f"fold{k}" / "split.json").read_text())["test"])
    assert len(tested) == 9  # every patient is tested exactly once across the folds
    fold_aucs = [json.loads((tmp_path / "cv" / f"fold{k}" / "evaluation.json").read_text())["test"]["roc_auc"] for k in range(3)]
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text())["summary"]["roc_auc"]
    assert summary["mean"] == pytest.approx(np.mean(fold_aucs)) and summary["std"] == pytest.approx(np.std(fold_aucs, ddof=1))

    # An interrupted cross-validation resumes: finished folds with the same config are not retrained...
    (tmp_path / "cv" / "fold2" / "evaluation.json").unlink()
    trained = {k: (tmp_path / "cv" / f"fold{k}" / "model.keras").stat().st_mtime_ns for k in range(3)}
    # ...and can be summarised meanwhile, training nothing.
    partial = cross_validate(cfg, tmp_path / "cv", train=False)
    assert [f["fold"] for f in partial["folds"]] == [0, 1] and partial["missing_folds"] == [2]
    assert not (tmp_path / "cv" / "fold2" / "evaluation.json").exists()
    again = cross_validate(cfg, tmp_path / "cv")
    assert again["folds"][:2] == result["folds"][:2]
    now = {k: (tmp_path / "cv" / f"fold{k}" / "model.keras").stat().st_mtime_ns for k in range(3)}
    assert [now[k] == trained[k] for k in range(3)] == [True, True, False]
    # ...but a changed recipe retrains them all.
    changed = cross_validate(replace(cfg, batch_size=8), tmp_path / "cv")
    assert all((tmp_path / "cv" / f"fold{k}" / "model.keras").stat().st_mtime_ns != now[k] for k in range(3))
    assert len(changed["folds"]) == 3


def test_cv_finished_only_with_nothing_finished_says_so(tmp_path):
    from click.testing import CliRunner

    from training.cli import main

    root = make_nih_folder(tmp_path / "data", infected=6, healthy=3, cells=1)
    res = CliRunner().invoke(main, ["cv", str(root), "--out", str(tmp_path / "cv"), "--finished-only"])
    assert res.exit_code == 1 and "no fold" in res.output and "finished" in res.output
    assert not (tmp_path / "cv" / "cv.json").exists()
