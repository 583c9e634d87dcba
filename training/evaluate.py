"""Evaluate a trained run on its held-out patients: metrics, calibration, plots, Grad-CAM and a report.

Calibration (temperature) and the decision threshold are fitted on the
validation patients only; the test patients are touched once, to measure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from training import metrics as M
from training.data import discover, load_arrays
from training.train import TrainConfig

THRESHOLD_GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def predict_logits(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.asarray(model.predict(x.astype(np.float32), batch_size=batch, verbose=0)).reshape(-1)


def per_patient(patients: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float) -> list[dict]:
    rows = []
    for pid in sorted(set(patients.tolist())):
        m = patients == pid
        pred = p[m] >= threshold
        rows.append({
            "patient": pid, "cells": int(m.sum()), "infected_true": float(y[m].mean()),
            "infected_pred": float(pred.mean()), "accuracy": float((pred == y[m].astype(bool)).mean()),
        })
    return rows


def calibrate(y_val: np.ndarray, logit_val: np.ndarray, target_sensitivity: float) -> tuple[float, float]:
    """(temperature, threshold) from validation: temperature by log loss, threshold for the target sensitivity."""
    temperature = M.fit_temperature(y_val, logit_val)
    threshold = M.threshold_for_sensitivity(y_val, M.sigmoid(logit_val / temperature), target_sensitivity)
    return temperature, threshold


def evaluate_run(run_dir: str | Path, gradcam: bool = True) -> dict:
    """Evaluate `run_dir` (from `malaria-train fit`); writes evaluation.json, report.md and plots/."""
    import keras

    run = Path(run_dir)
    cfg = TrainConfig.load(run / "config.json")
    split = json.loads((run / "split.json").read_text())
    model = keras.models.load_model(run / "model.keras")
    arrays = load_arrays(discover(cfg.data), cfg.image_size, cfg.fit, cfg.cache_dir)
    x_val, y_val = arrays.subset(split["val"])
    test_mask = np.isin(arrays.patient, split["test"])
    x_test, y_test, pat_test = arrays.x[test_mask], arrays.y[test_mask], arrays.patient[test_mask]
    print(f"evaluating on {len(x_test)} cells of {len(split['test'])} unseen patients", file=sys.stderr, flush=True)

    logit_val, logit_test = predict_logits(model, x_val), predict_logits(model, x_test)
    temperature, threshold = calibrate(y_val, logit_val, cfg.target_sensitivity)
    p_test = M.sigmoid(logit_test / temperature)
    p_test_raw = M.sigmoid(logit_test)
    result = {
        "model": cfg.arch, "image_size": cfg.image_size, "width": cfg.width, "fit": cfg.fit,
        "params": int(model.count_params()),
        "threshold": threshold, "temperature": temperature, "target_sensitivity": cfg.target_sensitivity,
        "test": M.summary(y_test, p_test, threshold),
        "test_at_0.5": M.at_threshold(y_test, p_test, 0.5),
        "validation": M.summary(y_val, M.sigmoid(logit_val / temperature), threshold),
        "across_thresholds": [M.at_threshold(y_test, p_test, t) for t in THRESHOLD_GRID],
        "calibration": {
            "ece_before": M.expected_calibration_error(y_test, p_test_raw),
            "ece_after": M.expected_calibration_error(y_test, p_test),
        },
        "per_patient": per_patient(pat_test, y_test, p_test, threshold),
        "patients": {k: len(split[k]) for k in ("train", "val", "test")},
    }
    (run / "evaluation.json").write_text(json.dumps(result, indent=1))
    np.savez(run / "test_predictions.npz", y=y_test, logit=logit_test, patient=pat_test)
    plots = run / "plots"
    plots.mkdir(exist_ok=True)
    from training import plots as P

    P.training_curves(json.loads((run / "history.json").read_text()), plots / "training_curves.png")
    P.roc_pr(y_test, p_test, plots / "roc.png", plots / "pr.png")
    P.confusion(result["test"], plots / "confusion.png")
    P.reliability(y_test, p_test_raw, p_test, plots / "reliability.png")
    if gradcam:
        P.gradcam_grid(model, x_test, y_test, p_test, threshold, plots / "gradcam.png", seed=cfg.seed)
    (run / "report.md").write_text(report_markdown(result, gradcam))
    t = result["test"]
    print(f"test: accuracy {t['accuracy']:.4f} sensitivity {t['sensitivity']:.4f} specificity {t['specificity']:.4f} "
          f"ROC AUC {t['roc_auc']:.4f} at threshold {threshold:.3f} (T={temperature:.2f}); report: {run / 'report.md'}",
          file=sys.stderr)
    return result


def _pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def report_markdown(r: dict, gradcam: bool) -> str:
    t, c = r["test"], r["calibration"]
    lines = [
        f"# Evaluation: {r['model']} {r['width']:g} at {r['image_size']} px ({r['params']:,} parameters)",
        "",
        f"Held-out test set: {t['n']} cells from {r['patients']['test']} patients never seen in training "
        f"or validation ({r['patients']['train']} train, {r['patients']['val']} validation patients).",
        "",
        f"Decision threshold {r['threshold']:.3f} on P(Parasitized), chosen on validation for "
        f"sensitivity >= {_pct(r['target_sensitivity'])}; temperature {r['temperature']:.3f} fitted on validation.",
        "",
        "| metric | test | validation |",
        "| --- | --- | --- |",
    ]
    for k in ("accuracy", "sensitivity", "specificity", "precision", "f1"):
        lines.append(f"| {k} | {_pct(t[k])} | {_pct(r['validation'][k])} |")
    for k in ("roc_auc", "pr_auc"):
        lines.append(f"| {k.replace('_', ' ').upper()} | {t[k]:.4f} | {r['validation'][k]:.4f} |")
    lines += [
        "",
        f"Confusion (test): TP {t['tp']}, FN {t['fn']}, FP {t['fp']}, TN {t['tn']}. "
        f"At threshold 0.5: accuracy {_pct(r['test_at_0.5']['accuracy'])}, sensitivity {_pct(r['test_at_0.5']['sensitivity'])}.",
        "",
        f"Calibration: expected calibration error {c['ece_before']:.4f} before, {c['ece_after']:.4f} after temperature scaling.",
        "",
        "## Across thresholds (test)",
        "",
        "| threshold | accuracy | sensitivity | specificity | precision |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in r["across_thresholds"]:
        lines.append(f"| {row['threshold']:.2f} | {_pct(row['accuracy'])} | {_pct(row['sensitivity'])} | {_pct(row['specificity'])} | {_pct(row['precision'])} |")
    lines += ["", "## Per patient (test)", "", "| patient | cells | infected (true) | infected (predicted) | accuracy |", "| --- | --- | --- | --- | --- |"]
    for p in r["per_patient"]:
        lines.append(f"| {p['patient']} | {p['cells']} | {_pct(p['infected_true'])} | {_pct(p['infected_pred'])} | {_pct(p['accuracy'])} |")
    lines += ["", "## Plots", "", "![training curves](plots/training_curves.png)", "![ROC](plots/roc.png) ![PR](plots/pr.png)",
              "![confusion matrix](plots/confusion.png) ![reliability](plots/reliability.png)"]
    if gradcam:
        lines += ["", "Grad-CAM on test cells (top: correct, bottom: wrong; red = evidence for Parasitized):", "", "![Grad-CAM](plots/gradcam.png)"]
    return "\n".join(lines) + "\n"
