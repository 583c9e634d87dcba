"""How far can more compute push accuracy on unseen patients? An upper bound from ensembles and test-time augmentation.

Usage (from the repo root, in the dev venv, after both cross-validations):
    python benchmarks/ensemble_ceiling.py runs/cv-stain runs/cv-baseline --json runs/ensemble-ceiling.json

For each fold of two cross-validations made on the same folds, it scores on
that fold's test patients: each model alone; each averaged over the 8 flips
and 90-degree rotations of every cell (a cell has no orientation); the two
models' mean logit; and that mean over the 8 transforms (16 forward passes a
cell). None of these is a model to ship: a combination that gains little
over its best member says the errors left are shared by both models, which
is what noisy labels and hard patients look like, not what a small model
alone looks like. Prints accuracy at 0.5 and ROC AUC per fold and their mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def dihedral(x: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations and mirror images of a batch of (N, H, W, C) images."""
    rotations = [np.rot90(x, r, axes=(1, 2)) for r in range(4)]
    return [np.ascontiguousarray(v) for r in rotations for v in (r, r[:, :, ::-1])]


def combinations(logits_a: np.ndarray, logits_b: np.ndarray) -> dict[str, np.ndarray]:
    """Each (8, N) stack of per-transform logits, alone and combined; row 0 is the untransformed image."""
    return {"A": logits_a[0], "A, 8 transforms": logits_a.mean(0), "B": logits_b[0], "B, 8 transforms": logits_b.mean(0),
            "A+B": (logits_a[0] + logits_b[0]) / 2, "A+B, 8 transforms": (logits_a.mean(0) + logits_b.mean(0)) / 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cv_a", help="a cross-validation folder (malaria-train cv --out), e.g. runs/cv-stain")
    ap.add_argument("cv_b", help="another, made on the same folds, e.g. runs/cv-baseline")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    import keras

    from training.data import discover, load_arrays
    from training.evaluate import predict_logits
    from training.metrics import ranking
    from training.train import TrainConfig

    folds = sorted(Path(args.cv_a).glob("fold*"))
    if not folds:
        raise SystemExit(f"no fold folders in {args.cv_a}")
    cfg = TrainConfig.load(folds[0] / "config.json")
    arrays = load_arrays(discover(cfg.data), cfg.image_size, cfg.fit, cfg.cache_dir)
    per_fold = []
    for fold in folds:
        other = Path(args.cv_b) / fold.name
        split = json.loads((fold / "split.json").read_text())
        if json.loads((other / "split.json").read_text())["test"] != split["test"]:
            raise SystemExit(f"{fold} and {other} test different patients: not the same folds")
        x, y = arrays.subset(split["test"])
        views = dihedral(x)
        models = [keras.models.load_model(run / "model.keras") for run in (fold, other)]
        stacks = [np.stack([predict_logits(model, v) for v in views]) for model in models]
        scores = {name: {"accuracy@0.5": float(np.mean((z > 0) == y)), "roc_auc": ranking(y, z)["roc_auc"]}
                  for name, z in combinations(*stacks).items()}
        per_fold.append({"fold": fold.name, "cells": int(len(y)), "scores": scores})
        print(fold.name, "  ".join(f"{n}: {100 * s['accuracy@0.5']:.2f} % / {s['roc_auc']:.4f}" for n, s in scores.items()), flush=True)
    names = list(per_fold[0]["scores"])
    mean = {n: {k: float(np.mean([f["scores"][n][k] for f in per_fold])) for k in ("accuracy@0.5", "roc_auc")} for n in names}
    print(f"\nA = {args.cv_a}, B = {args.cv_b}; mean over {len(per_fold)} folds\n")
    print("| | accuracy at 0.5 | ROC AUC |\n| --- | --- | --- |")
    for n in names:
        print(f"| {n} | {100 * mean[n]['accuracy@0.5']:.2f} % | {mean[n]['roc_auc']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"a": args.cv_a, "b": args.cv_b, "folds": per_fold, "mean": mean}, indent=1))


if __name__ == "__main__":
    main()
