"""Pure metric functions on labels and P(Parasitized): shared by evaluation and the quantization benchmark."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, np.float64), -60, 60)))


def at_threshold(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Confusion counts and the rates a clinician asks for, at one decision threshold."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(p) >= threshold
    tp = int(np.sum(pred & y))
    tn = int(np.sum(~pred & ~y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    precision = ratio(tp, tp + fp)
    sensitivity = ratio(tp, tp + fn)
    return {
        "threshold": float(threshold),
        "accuracy": ratio(tp + tn, len(y)),
        "sensitivity": sensitivity,
        "specificity": ratio(tn, tn + fp),
        "precision": precision,
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp, "tn": tn, "fp": fp, "fn": fn,
    }


def ranking(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Threshold-free quality: ROC AUC and PR AUC (average precision)."""
    if len(np.unique(y)) < 2:
        return {"roc_auc": float("nan"), "pr_auc": float("nan")}
    return {"roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p))}


def summary(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    return {**at_threshold(y, p, threshold), **ranking(y, p), "n": int(len(y))}


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity reaches `target`: fewest false alarms without missing more infected cells."""
    pos = np.sort(np.asarray(p)[np.asarray(y).astype(bool)])
    if len(pos) == 0:
        return 0.5
    k = int(np.floor((1.0 - target) * len(pos)))  # positives we may miss
    return float(pos[min(k, len(pos) - 1)])


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def fit_temperature(y: np.ndarray, logits: np.ndarray) -> float:
    """Temperature T minimising the log loss of sigmoid(logit / T) (Guo et al. 2017), by bounded search."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, np.float64)
    z = np.asarray(logits, np.float64)

    def nll(log_t: float) -> float:
        q = np.clip(sigmoid(z / np.exp(log_t)), 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))
