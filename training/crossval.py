"""Patient-grouped k-fold cross-validation, and the comparison of two architectures under the same folds.

One train/test split of 130 patients is noisy (a few hard patients move the
accuracy by a point); k folds with every patient tested once give a mean and
a spread to compare models honestly.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from training.train import TrainConfig

REPORTED = ("accuracy@0.5", "accuracy", "sensitivity", "specificity", "roc_auc", "pr_auc")


def fold_scores(evaluation: dict, fold: int) -> dict[str, float]:
    """The numbers compared across folds: accuracy at 0.5 (what public projects report) and at the chosen threshold."""
    t = evaluation["test"]
    return {"fold": fold, "accuracy@0.5": evaluation["test_at_0.5"]["accuracy"], **{k: t[k] for k in REPORTED[1:]}}


def summarise(per_fold: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: {"mean": float(np.mean([f[k] for f in per_fold])), "std": float(np.std([f[k] for f in per_fold], ddof=1)) if len(per_fold) > 1 else 0.0}
            for k in REPORTED}


def _finished(cfg: TrainConfig) -> dict | None:
    """A fold's evaluation from an earlier, interrupted cross-validation, if it was made with this very config."""
    run = Path(cfg.out)
    try:
        if TrainConfig.load(run / "config.json") == cfg:
            return json.loads((run / "evaluation.json").read_text())
    except (OSError, TypeError, ValueError):
        pass
    return None


def cross_validate(base: TrainConfig, out: str | Path, train: bool = True) -> dict:
    """Train and evaluate one model per fold (fold k is the test set); writes cv.json to `out`.

    A fold takes a quarter to half an hour on a laptop CPU, so folds already
    finished with the same config are reused: an interrupted cross-validation
    resumes where it stopped. With `train=False` nothing is trained: the
    folds finished so far are summarised and the others listed as missing.
    """
    from training.evaluate import evaluate_run
    from training.train import fit

    out = Path(out)
    per_fold, missing = [], []
    for k in range(base.folds):
        cfg = replace(base, test_fold=k, out=str(out / f"fold{k}"))
        evaluation = _finished(cfg)
        print(f"== fold {k + 1}/{base.folds}" + (" (finished earlier, reused)" if evaluation else "" if train else " (not finished, skipped)"),
              file=sys.stderr, flush=True)
        if evaluation is None:
            if not train:
                missing.append(k)
                continue
            fit(cfg)
            evaluation = evaluate_run(cfg.out, gradcam=False)
        per_fold.append(fold_scores(evaluation, k))
    if not per_fold:
        raise ValueError(f"no fold of {out} is finished with this config")
    result = {"config": asdict(base), "folds": per_fold, "missing_folds": missing, "summary": summarise(per_fold)}
    (out / "cv.json").write_text(json.dumps(result, indent=1))
    print(summary_markdown(result), file=sys.stderr)
    return result


def _fmt(k: str, v: float) -> str:
    return f"{v:.4f}" if "auc" in k else f"{100 * v:.2f} %"


def summary_markdown(result: dict) -> str:
    cfg = result["config"]
    done = f"{len(result['folds'])} of {cfg['folds']}" if result.get("missing_folds") else f"{len(result['folds'])}"
    lines = [f"{cfg['arch']} (width {cfg['width']:g}, {cfg['image_size']} px), {done} patient-grouped folds, seed {cfg['seed']}:", "",
             "| metric | mean | std |", "| --- | --- | --- |"]
    for k, s in result["summary"].items():
        lines.append(f"| {k} | {_fmt(k, s['mean'])} | {_fmt(k, s['std'])} |")
    return "\n".join(lines) + "\n"


def compare_markdown(model: dict, baseline: dict) -> str:
    """Side by side on the folds both have finished (seed and fold count must match, or the comparison is refused)."""
    for key in ("seed", "folds", "data"):
        if model["config"][key] != baseline["config"][key]:
            raise ValueError(f"the two cross-validations differ in {key}: not the same folds")
    common = sorted({f["fold"] for f in model["folds"]} & {f["fold"] for f in baseline["folds"]})
    if not common:
        raise ValueError("the two cross-validations have no finished fold in common")
    a, b = (summarise([f for f in r["folds"] if f["fold"] in common]) for r in (model, baseline))
    lines = [f"Folds compared: {', '.join(map(str, common))} of 0-{model['config']['folds'] - 1}.", "",
             f"| metric | {model['config']['arch']} | {baseline['config']['arch']} | difference |", "| --- | --- | --- | --- |"]
    for k in REPORTED:
        diff = a[k]["mean"] - b[k]["mean"]
        d = f"{diff:+.4f}" if "auc" in k else f"{100 * diff:+.2f} pp"
        lines.append(f"| {k} | {_fmt(k, a[k]['mean'])} ± {_fmt(k, a[k]['std'])} | {_fmt(k, b[k]['mean'])} ± {_fmt(k, b[k]['std'])} | {d} |")
    return "\n".join(lines) + "\n"
