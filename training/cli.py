"""The `malaria-train` command: fit a model, evaluate it, cross-validate it."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import click
from click.core import ParameterSource

from edge_app.extras import needs_train_extra
from training.train import TrainConfig

_DEFAULTS = TrainConfig()


def _train_options(fn):
    opts = [
        click.option("--out", default=_DEFAULTS.out, show_default=True, help="Output folder."),
        click.option("--arch", default=_DEFAULTS.arch, show_default=True, type=click.Choice(["mobilenetv2", "baseline-cnn"])),
        click.option("--image-size", default=_DEFAULTS.image_size, show_default=True, type=click.IntRange(32, 512)),
        click.option("--width", default=_DEFAULTS.width, show_default=True, type=float, help="MobileNetV2 width multiplier (alpha)."),
        click.option("--fit", default=_DEFAULTS.fit, show_default=True, type=click.Choice(["pad", "stretch"]), help="How a cell is fitted to the square input."),
        click.option("--epochs", default=_DEFAULTS.epochs, show_default=True, type=click.IntRange(1)),
        click.option("--batch-size", default=_DEFAULTS.batch_size, show_default=True, type=click.IntRange(1)),
        click.option("--learning-rate", default=_DEFAULTS.learning_rate, show_default=True, type=float, help="Peak LR of the warm-up + cosine schedule."),
        click.option("--patience", default=_DEFAULTS.patience, show_default=True, type=click.IntRange(1), help="Early stopping on validation AUC."),
        click.option("--class-weights/--no-class-weights", default=_DEFAULTS.class_weights, show_default=True),
        click.option("--augment/--no-augment", default=_DEFAULTS.augment, show_default=True),
        click.option("--stain-jitter", default=_DEFAULTS.stain_jitter, show_default=True, type=click.FloatRange(0.0, 0.5),
                     help="Per-channel colour gain range (+-) in augmentation, for slides stained differently."),
        click.option("--stain-gamma", default=_DEFAULTS.stain_gamma, show_default=True, type=click.FloatRange(0.0, 1.0),
                     help="Per-channel stain density range in augmentation: each channel raised to a power in exp(+-this)."),
        click.option("--seed", default=_DEFAULTS.seed, show_default=True, type=int),
        click.option("--folds", default=_DEFAULTS.folds, show_default=True, type=click.IntRange(3)),
        click.option("--test-fold", default=_DEFAULTS.test_fold, show_default=True, type=click.IntRange(0)),
        click.option("--init-weights", default=None, type=click.Path(exists=True, dir_okay=False), help="Local backbone weights (.weights.h5); enables head-then-fine-tune."),
        click.option("--fine-tune-epochs", default=_DEFAULTS.fine_tune_epochs, show_default=True, type=click.IntRange(0)),
        click.option("--target-sensitivity", default=_DEFAULTS.target_sensitivity, show_default=True, type=click.FloatRange(0.5, 1.0), help="Threshold is chosen on validation to reach this sensitivity."),
        click.option("--cache-dir", default=_DEFAULTS.cache_dir, show_default=True, help="Where decoded arrays are cached."),
        click.option("--max-images", default=None, type=click.IntRange(1), help="Train on a seeded subset (smoke runs)."),
        click.option("--extra-cells", default=None, type=click.Path(exists=True, file_okay=False),
                     help="An NIH-style folder of more training cells, e.g. from `malaria-train field-cells`; training only."),
        click.option("--extra-infected-repeat", default=_DEFAULTS.extra_infected_repeat, show_default=True,
                     type=click.IntRange(1), help="Show each extra infected cell this many times an epoch."),
        click.option("--config", "config_file", default=None, type=click.Path(exists=True, dir_okay=False), help="A config.json of an earlier run: reproduce it; options typed on the command line (e.g. --out) replace its values."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _config(data: str, config_file: str | None, **kwargs) -> TrainConfig:
    """Options from the command line, or a saved config.json with only the options typed on the command line replacing its values."""
    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in {"data": data, **kwargs}.items() if k in names}
    if not config_file:
        return TrainConfig(**given)
    ctx = click.get_current_context()
    typed = {k: v for k, v in given.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    return replace(TrainConfig.load(config_file), **typed)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train and evaluate the malaria cell classifier."""


@main.command("fit")
@click.argument("data", type=click.Path(exists=True, file_okay=False), default=_DEFAULTS.data)
@_train_options
def fit_cmd(data, config_file, **kwargs) -> None:
    """Train on an NIH-style DATA folder (Parasitized/, Uninfected/), then evaluate on the held-out patients."""
    from training.evaluate import evaluate_run
    from training.train import fit

    cfg = _config(data, config_file, **kwargs)
    fit(cfg)
    evaluate_run(cfg.out)


@main.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--gradcam/--no-gradcam", default=True, show_default=True)
def evaluate_cmd(run_dir, gradcam) -> None:
    """Evaluate a trained run folder on its held-out test patients: metrics, plots and report.md."""
    from training.evaluate import evaluate_run

    evaluate_run(run_dir, gradcam=gradcam)


@main.command("cv")
@click.argument("data", type=click.Path(exists=True, file_okay=False), default=_DEFAULTS.data)
@_train_options
@click.option("--finished-only", is_flag=True, help="Train nothing: summarise the folds finished so far and list the missing ones.")
def cv_cmd(data, config_file, finished_only, **kwargs) -> None:
    """Patient-grouped k-fold cross-validation: one model per fold; writes OUT/cv.json and fold folders."""
    from training.crossval import cross_validate

    try:
        cross_validate(_config(data, config_file, **kwargs), kwargs["out"], train=not finished_only)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("compare")
@click.argument("model_cv", type=click.Path(exists=True, dir_okay=False))
@click.argument("baseline_cv", type=click.Path(exists=True, dir_okay=False))
def compare_cmd(model_cv, baseline_cv) -> None:
    """Print a Markdown table comparing two cv.json files made under the same folds."""
    import json

    from training.crossval import compare_markdown

    try:
        click.echo(compare_markdown(json.loads(open(model_cv).read()), json.loads(open(baseline_cv).read())))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("detector")
@click.argument("data", type=click.Path(exists=True, file_okay=False), default="../shared/datasets/iml_malaria")
@click.option("--out", default="runs/detector", show_default=True, help="Output folder.")
@click.option("--test-run", default=None, type=click.IntRange(0), help="Hold out this run of consecutive frames "
              "(0, 1, 2 in frame order) for cross-validation; default: train on every field.")
@click.option("--steps", default=3000, show_default=True, type=click.IntRange(1), help="Training steps (batches).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option("--stain-input", default="rgb", show_default=True, type=click.Choice(["rgb", "od"]),
              help="What the detector sees: the RGB field, or its stain optical density normalised per field.")
@click.option("--relight", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Share of training crops re-lit and re-stained as another laboratory's (faint or dense stain, dim or "
                   "tinted lamp); 0 trains on the fields' own colours.")
@click.option("--max-blur", default=2.0, show_default=True, type=click.FloatRange(0.3, 5.0),
              help="The strongest focus blur of a training crop (Gaussian sigma, input pixels).")
@click.option("--points", default=None, type=click.Path(exists=True, file_okay=False),
              help="Another laboratory's point-labelled fields to train on too (images/ and labels/, a line `x y class` "
                   "per cell, as ../shared/datasets/chula_rbc): boxed by the shipped detector where it finds the points.")
@click.option("--points-test-block", default=None, type=click.IntRange(0),
              help="Hold out this block of consecutive point-labelled fields (0, 1, 2 in frame order).")
@click.option("--scale", default=0.25, show_default=True, type=click.FloatRange(0.05, 1.0),
              help="Detector input pixels per field pixel (0.25: a 1280x960 field is seen at 320x240).")
@click.option("--crop", default=96, show_default=True, type=click.IntRange(32), help="Training crop side, in input pixels.")
@click.option("--channels", default=1.0, show_default=True, type=click.FloatRange(0.25, 4.0),
              help="Multiplies every layer's channels: more capacity, more time a field.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--max-fields", default=None, type=click.IntRange(1), help="Train on the first N fields only (smoke runs).")
def detector_cmd(data, out, test_run, steps, batch_size, stain_input, relight, max_blur, points, points_test_block, scale, crop, channels, seed, max_fields) -> None:
    """Train the red-cell detector on hand-boxed fields (DATA: images/ and annotations.json) and write its int8 bundle.

    Cross-validate over runs with --test-run 0, 1, 2 and score each with
    benchmarks/real_fields.py --run K --detector OUT/cell-detector-int8.tflite.
    """
    from training.detector import DetectorConfig, fit

    annotations = Path(data) / "annotations.json"
    if not annotations.is_file() or not (Path(data) / "images").is_dir():
        raise click.UsageError(f"{data} must hold images/ and annotations.json (IML-Malaria layout)")
    fit(DetectorConfig(data=data, out=out, test_run=test_run, steps=steps, batch_size=batch_size, stain_input=stain_input, relight=relight, max_blur=max_blur,
                       points=points, points_test_block=points_test_block,
                       scale=scale,
                       crop=crop, channels=channels, seed=seed,
                       max_fields=max_fields))


@main.command("detector-threshold")
@click.argument("detector", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", type=click.Path(exists=True, file_okay=False), default="../shared/datasets/iml_malaria")
@click.option("--exclude-run", default=None, type=click.IntRange(0),
              help="Leave out this run of consecutive frames; default: the run the detector was trained without, if any.")
def detector_threshold_cmd(detector, data, exclude_run) -> None:
    """Re-tune a detector bundle's threshold on hand-boxed fields (DATA: images/ and annotations.json), no retraining.

    A threshold fitted to one microscope's fields can be too strict or too
    lax on another's: annotate a few dozen of your own fields and re-tune
    it there. The threshold with the best F1 at IoU 0.5 is written into
    DETECTOR's sidecar with the whole table, and the table is printed.
    """
    from edge_app.model import ModelError, read_sidecar
    from edge_app.preprocess import ImageError
    from training.detector import store_threshold
    from training.fields import load_annotations, runs_of

    annotations = Path(data) / "annotations.json"
    if not annotations.is_file() or not (Path(data) / "images").is_dir():
        raise click.UsageError(f"{data} must hold images/ and annotations.json (IML-Malaria layout)")
    try:
        meta = read_sidecar(detector)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    exclude = meta.get("training", {}).get("held_out_run") if exclude_run is None else exclude_run
    boxes = load_annotations(annotations)
    names = [n for i, r in enumerate(runs_of(sorted(boxes))) if i != exclude for n in r]
    if not names:
        raise click.UsageError(f"no fields left in {data} once run {exclude} is left out: pass --exclude-run or other fields")
    try:
        threshold, table = store_threshold(Path(detector), data, names, boxes)
    except (ImageError, ModelError) as exc:
        raise click.ClickException(f"{exc} (nothing was written)") from None
    for t, row in table.items():
        click.echo(f"{t:.2f}  recall {row['recall']:.3f}  precision {row['precision']:.3f}  F1 {row['f1']:.3f}" + ("  <- chosen" if t == threshold else ""))
    click.echo(f"{detector}: threshold {threshold} from {len(names)} fields" + (f" (run {exclude} left out)" if exclude is not None else ""), err=True)
    if "box_filter" in meta:
        click.echo(f"{detector} has a box filter fitted at its old threshold (the threshold sets a field's typical cell): "
                   "refit it with malaria-train box-filter", err=True)


@main.command("box-filter")
@click.argument("detectors", type=click.Path(exists=True, file_okay=False))
@click.argument("data", type=click.Path(exists=True, file_okay=False), default="../shared/datasets/iml_malaria")
@click.option("--write", "detector", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The detector bundle whose sidecar gets the box filter.")
@click.option("--exclude-run", default=None, type=click.IntRange(0),
              help="Leave out this run of consecutive frames; default: the run that detector was trained without, if any.")
def box_filter_cmd(detectors, data, detector, exclude_run) -> None:
    """Fit the box filter that decides which detector boxes count, and write it into a detector's sidecar.

    DETECTORS holds run0/, run1/, ... each a detector bundle trained without
    that run (`malaria-train detector --test-run K --out DETECTORS/runK`):
    each run's fields are scored by the detector that never saw them, as a
    new slide will be. For cross-validation, write into each fold's own
    detector (its run is left out); for the shipped detector, fit on every
    run.
    """
    from edge_app.box_filter import FEATURES
    from edge_app.detect import CellDetector
    from edge_app.model import ModelError
    from edge_app.preprocess import ImageError
    from training.box_filter import fit as fit_filter
    from training.box_filter import run_candidates
    from training.box_filter import write as write_filter
    from training.fields import load_annotations, runs_of

    annotations = Path(data) / "annotations.json"
    if not annotations.is_file() or not (Path(data) / "images").is_dir():
        raise click.UsageError(f"{data} must hold images/ and annotations.json (IML-Malaria layout)")
    boxes = load_annotations(annotations)
    runs = runs_of(sorted(boxes))
    try:
        target = CellDetector(detector)  # the bundle to write into is a detector, whole and verified, before minutes of fitting
        exclude = target.meta.get("training", {}).get("held_out_run") if exclude_run is None else exclude_run
        candidates, used = [], []
        for k, names in enumerate(runs):
            if k == exclude:
                continue
            fold = Path(detectors) / f"run{k}" / "cell-detector-int8.tflite"
            if not fold.is_file():
                raise click.UsageError(f"no {fold}: train it with malaria-train detector --test-run {k} --out {fold.parent}")
            click.echo(f"run {k}: {len(names)} fields, found by {fold}", err=True)
            candidates += run_candidates(CellDetector(fold), data, names, boxes)
            used.append(k)
        box_filter, table = fit_filter(candidates)
    except (ImageError, ModelError, ValueError) as exc:
        raise click.ClickException(f"{exc} (nothing was written)") from None
    write_filter(detector, box_filter, f"runs {', '.join(map(str, used))} of {data}, each found by {detectors}/runK", table)
    n = sum(len(f.cell) for f in candidates)
    click.echo(f"{detector}: box filter from {n} candidates of {len(candidates)} fields, cut {box_filter.cut} "
               f"(F1 {table[box_filter.cut]:.3f}; weights "
               + ", ".join(f"{name} {w:+.2f}" for name, w in zip(FEATURES, box_filter.weights)) + ")", err=True)


@main.command("field-cells")
@click.argument("data", type=click.Path(exists=True, file_okay=False), default="../shared/datasets/iml_malaria")
@click.option("--out", required=True, help="NIH-style folder to write (Parasitized/, Uninfected/).")
@click.option("--exclude-run", default=None, type=click.IntRange(0), help="Leave out this run of consecutive frames (its cells are the test).")
@click.option("--stain-like", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A classifier bundle whose sidecar has a stain reference: match each field's stain to it, as the app does before classifying.")
def field_cells_cmd(data, out, exclude_run, stain_like) -> None:
    """Cut the annotated cells of hand-boxed fields (DATA: images/ and annotations.json) out for classifier training."""
    from edge_app.model import read_sidecar
    from training.fields import export_cells, load_annotations, runs_of

    runs = runs_of(sorted(load_annotations(Path(data) / "annotations.json")))
    names = [n for i, r in enumerate(runs) if i != exclude_run for n in r]
    stain = None
    if stain_like:
        meta = read_sidecar(stain_like)
        if not meta.get("stain"):
            raise click.ClickException(f"{stain_like} has no stain reference: run `malaria-quantize stain {stain_like}` first")
        stain = (meta["stain"]["cell_colour"], int(meta["input"]["size"]), str(meta["preprocessing"]["fit"]))
    counts = export_cells(data, names, out, stain)
    click.echo(f"{len(names)} fields: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" cells in {out}", err=True)


run = needs_train_extra("malaria-train", main)  # the console script


if __name__ == "__main__":
    run()
