"""The `malaria-quantize` command: turn a trained run into TFLite bundles for the Pi."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from edge_app.extras import needs_train_extra
from quantization.convert import VARIANTS
from quantization.counting import REVIEW_FPR

#: Chosen on the shipped model's validation patients: a `convert --float-layers K` for each K, then `benchmark --split val` (model card).
DEFAULT_FLOAT_LAYERS = 16


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Convert trained models to TFLite and measure what each variant keeps."""


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", default="models", show_default=True, help="Folder for the .tflite + .json bundles.")
@click.option("--name", default="malaria-edge", show_default=True, help="File name prefix: NAME-VARIANT.tflite.")
@click.option("--variant", "variants", multiple=True, type=click.Choice(VARIANTS), help="Repeatable; default: all.")
@click.option("--representative", default=300, show_default=True, type=click.IntRange(1), help="Training images used to calibrate int8.")
@click.option("--int8-input", default="int8", show_default=True, type=click.Choice(["int8", "uint8"]), help="Input dtype of the full-int8 model.")
@click.option("--bias-images", default=1000, show_default=True, type=click.IntRange(0),
              help="Training images on which the int8 output's offset from the float model is measured and removed (0: no correction).")
@click.option("--float-layers", default=DEFAULT_FLOAT_LAYERS, show_default=True, type=click.IntRange(0),
              help="Keep the int8 model's first N quantized layers in float, where rounding costs the most agreement with the float model (0: all int8).")
@click.option("--max-fpr", default=0.01, show_default=True, type=click.FloatRange(0.0, 0.5, max_open=True),
              help="Smear counting: highest share of healthy validation cells called Parasitized at the counting threshold.")
@click.option("--version", "version", default=None, help="The model's version, recorded in its sidecar and in every result made with it (default: the run folder's name).")
def convert(run_dir, out, name, variants, representative, int8_input, bias_images, float_layers, max_fpr, version) -> None:
    """Convert RUN_DIR (from `malaria-train fit`) to TFLite, scoring each file on the run's test patients.

    Each file also gets its smear-counting threshold and error rates, measured
    on the run's validation patients (see `malaria-quantize counting`).
    """
    from quantization.convert import convert_all, representative_pixels
    from quantization.counting import add_counting
    from quantization.score import score_bundle
    from quantization.stain_reference import stain_block
    from training.data import discover, load_arrays
    from training.train import TrainConfig

    import keras

    run = Path(run_dir)
    evaluation_file = run / "evaluation.json"
    if not evaluation_file.exists():
        raise click.ClickException(f"{evaluation_file} is missing: run `malaria-train evaluate {run}` first (it fits the threshold)")
    cfg = TrainConfig.load(run / "config.json")
    evaluation = json.loads(evaluation_file.read_text())
    split = json.loads((run / "split.json").read_text())
    arrays = load_arrays(discover(cfg.data), cfg.image_size, cfg.fit, cfg.cache_dir)
    x_train, _ = arrays.subset(split["train"])
    x_test, y_test = arrays.subset(split["test"])
    x_val, y_val = arrays.subset(split["val"])
    model = keras.models.load_model(run / "model.keras")
    meta = {
        "image_size": cfg.image_size, "fit": cfg.fit, "version": version or run.name,
        "threshold": evaluation["threshold"], "temperature": evaluation["temperature"],
        "training": {
            "arch": cfg.arch, "width": cfg.width, "params": evaluation["params"], "seed": cfg.seed,
            "patients": evaluation["patients"], "data": "NIH malaria cell images (Rajaraman et al. 2018)",
            "float_test_metrics": {k: evaluation["test"][k] for k in ("accuracy", "sensitivity", "specificity", "roc_auc", "n")},
        },
        "stain": stain_block(x_train, f"{len(split['train'])} training patients' cells"),
    }
    sample = np.random.default_rng(cfg.seed + 1).choice(len(x_train), min(bias_images, len(x_train)), replace=False)
    try:
        paths = convert_all(model, out, name, meta, representative_pixels(x_train, representative, cfg.seed),
                            variants or VARIANTS, int8_input, x_train[np.sort(sample)], float_layers)
    except ValueError as exc:  # e.g. more float layers than the model has, or float layers with uint8 input
        raise click.ClickException(str(exc)) from None
    for path in paths:
        scores = score_bundle(path, x_test, y_test)
        side = path.with_suffix(".json")
        data = json.loads(side.read_text())
        data["metrics"] = {"split": "test patients of the training run", **scores}
        side.write_text(json.dumps(data, indent=2) + "\n")
        counting = add_counting(path, x_val, y_val, max_fpr, f"{len(split['val'])} validation patients of the training run")
        click.echo(f"{path} {path.stat().st_size / 1024:.0f} KiB: accuracy {scores['accuracy']:.4f}, "
                   f"sensitivity {scores['sensitivity']:.4f}, specificity {scores['specificity']:.4f}, "
                   f"ROC AUC {scores['roc_auc']:.4f}; " + _counting_text(counting), err=True)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", default=None, type=click.Path(exists=True, file_okay=False),
              help="An NIH-style folder to score on instead of the run's test patients.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "val"]),
              help="The run's patients to score on: test, or val to choose conversion settings without looking at test.")
@click.option("--threads", default="1,2,4", show_default=True, help="Comma-separated interpreter thread counts.")
@click.option("--repeats", default=200, show_default=True, type=click.IntRange(5), help="Single-image timings per thread count.")
@click.option("--batch", default=32, show_default=True, type=click.IntRange(1))
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write the JSON here and the Markdown beside it (.md).")
def benchmark(run_dir, models, data, split, threads, repeats, batch, out) -> None:
    """Size, accuracy, agreement with the float model, latency and memory of MODELS (TFLite bundles) for RUN_DIR."""
    import keras

    from quantization.benchmark import benchmark as run_benchmark
    from quantization.benchmark import markdown
    from training.data import discover, load_arrays
    from training.train import TrainConfig

    run = Path(run_dir)
    cfg = TrainConfig.load(run / "config.json")
    if data:
        arrays = load_arrays(discover(data), cfg.image_size, cfg.fit, cfg.cache_dir)
        x, y = arrays.x, arrays.y
        images = f"images from {data}"
    else:
        patients = json.loads((run / "split.json").read_text())
        x, y = load_arrays(discover(cfg.data), cfg.image_size, cfg.fit, cfg.cache_dir).subset(patients[split])
        images = f"cells of the run's {len(patients[split])} {'test' if split == 'test' else 'validation'} patients"
    result = run_benchmark(models, x, y, keras.models.load_model(run / "model.keras"),
                           tuple(int(t) for t in threads.split(",")), repeats, batch, images)
    table = markdown(result)
    click.echo(table)
    if out:
        Path(out).write_text(json.dumps(result, indent=1))
        Path(out).with_suffix(".md").write_text(table)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--max-fpr", default=0.01, show_default=True, type=click.FloatRange(0.0, 0.5, max_open=True),
              help="Highest share of healthy cells called Parasitized at the counting threshold.")
def counting(run_dir, model, max_fpr) -> None:
    """Choose MODEL's threshold for counting smear cells on RUN_DIR's validation patients; store it and the error rates there.

    `malaria-edge smear` and `capture` count at this threshold and correct the
    parasitemia for these rates. Validation, not test, patients: the test
    patients stay unseen for benchmarks/smear_slides.py.
    """
    from quantization.counting import add_counting
    from training.data import discover, load_arrays
    from training.train import TrainConfig

    run = Path(run_dir)
    cfg = TrainConfig.load(run / "config.json")
    split = json.loads((run / "split.json").read_text())
    x, y = load_arrays(discover(cfg.data), cfg.image_size, cfg.fit, cfg.cache_dir).subset(split["val"])
    block = add_counting(model, x, y, max_fpr, f"{len(split['val'])} validation patients of the training run")
    click.echo(f"{model}: {_counting_text(block)}", err=True)


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", default="../shared/datasets/malaria/cell_images", show_default=True, type=click.Path(exists=True, file_okay=False),
              help="The cell images the model was trained on (NIH layout).")
@click.option("--sample", default=3000, show_default=True, type=click.IntRange(1), help="Training cells to measure, drawn at random (seeded).")
@click.option("--test-fold", default=0, show_default=True, type=click.IntRange(0), help="The training run's --test-fold (its split).")
def stain(model, data, sample, test_fold) -> None:
    """Record the colour of MODEL's training cells in its sidecar, for a model converted before `convert` did so.

    `smear` and `capture` match each field's stain to it before classifying
    (edge_app.stain). The training patients are dealt again from the seed in
    MODEL's sidecar, as `malaria-train fit` dealt them.
    """
    from edge_app.model import read_sidecar
    from edge_app.preprocess import preprocess
    from quantization.stain_reference import write_stain
    from training.data import discover, split_by_patient

    meta = read_sidecar(model)
    seed = int(meta.get("training", {}).get("seed", 0))
    samples = discover(data)
    split = split_by_patient(samples, seed=seed, test_fold=test_fold)
    train = [s for s in samples if s.patient in set(split.train)]
    chosen = np.random.default_rng(seed).choice(len(train), min(sample, len(train)), replace=False)
    size, fit = int(meta["input"]["size"]), str(meta["preprocessing"]["fit"])
    pixels = np.stack([preprocess(train[i].path, size, fit) for i in np.sort(chosen)])
    block = write_stain(model, pixels, f"{len(chosen)} cells of {len(split.train)} training patients (seed {seed})")
    click.echo(f"{model}: training cells' median colour {block['cell_colour']} ({block['measured_on']})", err=True)


@main.command("counting-fields")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", default="../shared/datasets/iml_malaria", show_default=True, type=click.Path(exists=True, file_okay=False),
              help="Hand-boxed fields: images/ and annotations.json (IML-Malaria layout).")
@click.option("--detector", default=None, type=click.Path(exists=True, dir_okay=False), help="Cell detector (default: the shipped one).")
@click.option("--run", "runs", multiple=True, type=click.IntRange(0),
              help="Measure on this run of consecutive frames only (repeatable); default: every field.")
@click.option("--max-fpr", default=0.01, show_default=True, type=click.FloatRange(0.0, 0.5, max_open=True),
              help="Highest share of detections that are not infected cells called Parasitized at the counting threshold.")
@click.option("--review-fpr", default=REVIEW_FPR, show_default=True, type=click.FloatRange(0.0, 0.5, max_open=True),
              help="Review threshold: highest share of those detections shown to the microscopist (with every cell counted).")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1))
def counting_fields(model, data, detector, runs, max_fpr, review_fpr, threads) -> None:
    """Choose MODEL's smear-counting and review thresholds on real annotated fields, counted as `malaria-edge smear`
    counts them.

    Stores each threshold and the pipeline's error rates there, with the
    number of cells behind them, in MODEL's sidecar: `smear` and `capture`
    correct the parasitemia for the counting ones, and their interval
    carries the rates' uncertainty; `serve` shows the microscopist every
    cell at or above the review threshold and corrects the reviewed count
    for the sensitivity there. For cross-validation, measure on two runs
    (--run) and score the third with benchmarks/real_fields.py.
    """
    from edge_app.detect import CellDetector, default_detector_path
    from edge_app.model import ModelBundle
    from edge_app.review import REVIEW_SHOWS
    from quantization.counting import check_review_share, field_scores, write_field_counting
    from training.fields import load_annotations, runs_of

    try:
        check_review_share(max_fpr, review_fpr)  # before the minutes of counting, not after
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--review-fpr") from None
    grouped = runs_of(sorted(load_annotations(Path(data) / "annotations.json")))
    chosen = sorted(set(runs)) if runs else list(range(len(grouped)))
    names = [n for k in chosen for n in grouped[k]]
    finder = CellDetector(detector or default_detector_path(), threads=threads)
    scores, review_scores = field_scores(ModelBundle(model, threads=threads), finder, data, names, REVIEW_SHOWS)
    counting, review = write_field_counting(model, [scores], max_fpr, review_fpr, {
        "detector_sha256": finder.meta["tflite_sha256"],
        "measured_on": f"{len(names)} real fields (runs {', '.join(map(str, chosen))} of {Path(data).resolve().name}), "
                       f"cells found by {finder.name}"}, [review_scores], REVIEW_SHOWS)
    click.echo(f"{model}: {_counting_text(counting)}", err=True)
    if review:
        click.echo(f"{model}: {_counting_text(review, 'review')}", err=True)


def _counting_text(block: dict | None, name: str = "counting") -> str:
    if block is None:
        return "no usable counting threshold (sensitivity not above the false-positive rate): smear counts stay uncorrected"
    return (f"{name} threshold {block['threshold']:.4f}: sensitivity {block['sensitivity']:.4f}, "
            f"false-positive rate {block['false_positive_rate']:.4f} ({block['infected_cells']} infected, "
            f"{block['healthy_cells']} healthy cells)")


run = needs_train_extra("malaria-quantize", main)  # the console script


if __name__ == "__main__":
    run()
