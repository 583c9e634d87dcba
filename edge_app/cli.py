"""The `malaria-edge` command: thin shells over the edge_app modules.

Exit codes: 0 all inputs classified, 1 the job ran but some inputs failed,
2 usage or setup error (missing path, bad model, unusable output file).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import unicodedata
import warnings
from pathlib import Path

import click

from edge_app import __version__
from edge_app.classify import classify_stream, duration_text
from edge_app.model import ModelBundle, ModelError, default_model_path
from edge_app.native_log import native_stderr_silenced
from edge_app.results import FORMATS, OutputError, ResultWriter, record_provenance
from edge_app.sources import decode_stream, expand_paths


class SetupError(click.ClickException):
    exit_code = 2


def _load_model(model: str | None, threads: int) -> ModelBundle:
    try:
        return ModelBundle(model or default_model_path(), threads=threads)
    except ModelError as exc:
        raise SetupError(str(exc)) from None


def _format_for(output: str | None, fmt: str | None) -> str:
    return fmt or ("jsonl" if output and output.lower().endswith(".jsonl") else "csv")


def _default_threads() -> int:
    return min(4, os.cpu_count() or 1)


model_option = click.option(
    "--model", type=click.Path(dir_okay=False), default=None,
    help="Model .tflite file (its .json sidecar must sit beside it). Default: the shipped model.",
)


register_option = click.option(
    "--register", "register", type=click.Path(dir_okay=False), envvar="MALARIA_EDGE_REGISTER", default=None,
    show_envvar=True, help="The slide register (SQLite). Default: register.sqlite3 in the user's data folder "
                           "(`malaria-edge doctor` says where).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="malaria-edge")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Offline malaria screening of thin blood smears: count microscope fields, review their flagged cells in a browser,
    classify single-cell images. `malaria-edge COMMAND --help` tells more; the guides are in the source's docs/."""
    ctx.with_resource(native_stderr_silenced())  # no runtime or decoder log lines among ours (edge_app.native_log)
    # Pillow warns about oddities of files it still decodes (or fails on, with the reason in the error row).
    warnings.filterwarnings("ignore", module=r"PIL\.")


@main.command(short_help="Classify single-cell images (files and folders).")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@model_option
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write results to this file (default: stdout).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Output format (default: from --output's suffix, else csv).")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Look into subfolders.")
@click.option("--threads", type=click.IntRange(1, 64), default=_default_threads, show_default="min(4, CPUs)", help="Interpreter and decoder threads.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=32, show_default=True, help="Images per interpreter call.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="P(Parasitized) at or above which a cell is called Parasitized (default: the model's).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run: skip inputs already in --output.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file.")
def classify(paths, model, output, fmt, recursive, threads, batch_size, threshold, resume, overwrite) -> None:
    """Classify cell images in PATHS (files and/or folders).

    Writes one row per image: path, label, probability (of Parasitized),
    status (ok/error) and error. A summary goes to stderr.
    """
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other")
    fmt = _format_for(output, fmt)
    try:
        files = expand_paths(paths, recursive=recursive, on_skipped=_warn_skipped)
    except FileNotFoundError as exc:
        raise SetupError(str(exc)) from None
    bundle = _load_model(model, threads)
    try:
        writer = ResultWriter(output, fmt, resume=resume, overwrite=overwrite)
        if output:
            record_provenance(output, bundle.provenance(bundle.threshold if threshold is None else threshold), resume)
    except (OutputError, OSError) as exc:
        raise SetupError(str(exc)) from None
    with writer:
        done = writer.done_paths
        todo = [p for p in files if p not in done]
        if not files:
            click.echo("warning: no image files found in the given paths", err=True)
        stream = decode_stream(todo, bundle.input.size, bundle.fit, workers=threads)
        try:
            if sys.stderr.isatty() and todo:
                with click.progressbar(length=len(todo), label="Classifying", file=sys.stderr) as bar:
                    summary = classify_stream(bundle, stream, writer, batch_size, threshold, on_row=lambda _: bar.update(1))
            else:
                summary = classify_stream(bundle, stream, writer, batch_size, threshold)
        except KeyboardInterrupt:
            hint = " rerun the same command with --resume to finish" if output else ""
            click.echo(f"\ninterrupted; rows written so far are kept;{hint}", err=True)
            sys.exit(130)
    summary.skipped = len(files) - len(todo)
    _warn_fields(summary.fields)
    click.echo(summary.text(), err=True)
    earlier_errors = sum(1 for r in writer.previous if r.get("status") == "error")
    sys.exit(1 if summary.errors or earlier_errors else 0)


def _warn_fields(fields: list[tuple[str, tuple[int, int]]], shown: int = 5) -> None:
    """Say which inputs are whole microscope fields: `classify` calls one image one cell, so a field's row means nothing."""
    for path, (w, h) in fields[:shown]:
        click.echo(f"warning: {path} is a whole field ({w}x{h}), not a single cell: its row is meaningless; count "
                   "fields with `malaria-edge smear`", err=True)
    if len(fields) > shown:
        click.echo(f"warning: and {len(fields) - shown} more whole fields", err=True)


def _rounded(v):
    """Metrics to 4 decimals for reading; the sidecar keeps full precision."""
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    return v


@main.command(short_help="Show the models, their thresholds and error rates.")
@model_option
def info(model) -> None:
    """Show the model's metadata and the TFLite runtime in use."""
    bundle = _load_model(model, threads=1)
    meta = bundle.meta
    click.echo(f"model:       {bundle.path}")
    click.echo(f"name:        {bundle.name}, version {bundle.version}")
    click.echo(f"runtime:     {bundle.runtime.name} {bundle.runtime.version}")
    click.echo(f"input:       {bundle.input.size}x{bundle.input.size} RGB, {bundle.input.dtype}, fit={bundle.fit}, "
               f"resize={bundle.meta['preprocessing']['resize']}")
    click.echo(f"labels:      {', '.join(meta['labels'])}")
    click.echo(f"threshold:   {bundle.threshold:.4f} (P(Parasitized) at or above is Parasitized)")
    click.echo(f"temperature: {bundle.temperature:.4f}")
    click.echo(f"size:        {bundle.path.stat().st_size} bytes, sha256 {meta['tflite_sha256']}")
    if "float_layers" in meta or "bias_correction" in meta:  # how an int8 file was made (malaria-quantize convert)
        parts = [f"first {meta['float_layers']} layers in float" if meta.get("float_layers") else "all layers int8"]
        if meta.get("bias_correction"):
            parts.append(f"output bias corrected by {meta['bias_correction']['logit_offset_removed']:.4f} logit")
        click.echo(f"int8:        {'; '.join(parts)}")
    if bundle.counting:
        c, block = bundle.counting, meta["counting"]
        click.echo(f"counting:    threshold {c.threshold:.4f} for smear/capture; sensitivity {c.errors.sensitivity:.4f}, "
                   f"false-positive rate {c.errors.false_positive_rate:.4f} (measured on {block.get('measured_on', '?')}; "
                   "the parasitemia is corrected for them)")
    if bundle.review:
        r = bundle.review
        also = [f"every cell at least {r.enlarged_area:g} times its field's median"] if r.enlarged_area else []
        also += ["every white cell set apart"] if r.white_cells else []
        click.echo(f"review:      every cell at P >= {r.threshold:.4f}{''.join(', ' + a for a in also)} is shown to the "
                   f"microscopist; sensitivity {r.errors.sensitivity:.4f} (the reviewed parasitemia is corrected for the cells "
                   "it misses)")
    if bundle.cell_colour:
        click.echo(f"stain:       each field's cells matched to the training cells' median colour "
                   f"{', '.join(f'{v:.0f}' for v in bundle.cell_colour)} (RGB) before smear/capture classify them, "
                   "each as seen and mirrored, and a likely one in all 8 orientations")
    from edge_app.detect import CellDetector, default_detector_path

    try:
        finder = CellDetector(default_detector_path())
        click.echo(f"detector:    {finder.path} ({finder.name}, threshold {finder.threshold:.2f}, "
                   f"sha256 {finder.meta['tflite_sha256']})")
    except ModelError as exc:
        click.echo(f"detector:    unusable ({exc}); smear and capture need --segmenter classical")
    for key in ("metrics", "training"):
        if meta.get(key):
            click.echo(f"{key}:")
            for k, v in meta[key].items():
                shown = json.dumps(_rounded(v)) if isinstance(v, (dict, list)) else _rounded(v)
                click.echo(f"  {k}: {shown}")


@main.command(short_help="Classify cell images as they arrive in a folder.")
@click.argument("folder", type=click.Path(file_okay=False))
@model_option
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True, help="Results file; created, or continued if it exists.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Output format (default: from --output's suffix, else csv).")
@click.option("--interval", type=click.FloatRange(0.05), default=2.0, show_default=True, help="Seconds between looks at the folder.")
@click.option("--settle", type=click.FloatRange(0.0), default=1.0, show_default=True, help="Seconds a file must stay unchanged before it is read.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Also look in the folder's subfolders.")
@click.option("--threads", type=click.IntRange(1, 64), default=_default_threads, show_default="min(4, CPUs)",
              help="CPU threads for decoding images and for the classifier.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=32, show_default=True, help="Images classified together.")
def watch(folder, model, output, fmt, interval, settle, recursive, threads, batch_size) -> None:
    """Classify images as they appear in FOLDER, until stopped (Ctrl-C or SIGTERM).

    Each image is classified once: images already in --output are skipped,
    also after a restart. Meant to run as a systemd service (see deploy/).
    """
    import signal
    import threading

    from edge_app.watch import watch as watch_folder

    bundle = _load_model(model, threads)
    try:
        writer = ResultWriter(output, _format_for(output, fmt), resume=True)
        record_provenance(output, bundle.provenance(bundle.threshold), resume=True)
    except (OutputError, OSError) as exc:
        raise SetupError(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"watching {folder} every {interval:g} s; results to {output} ({len(writer.done_paths)} already there)", err=True)
    if not os.path.isdir(folder):
        click.echo(f"warning: {folder} does not exist yet; waiting for it to appear (a USB stick?)", err=True)
    with writer:
        warned: set[str] = set()

        def warn_once(path: str, reason: str) -> None:  # the folder is looked at every few seconds: say it once
            if path not in warned:
                warned.add(path)
                _warn_skipped(path, reason)

        total = watch_folder(folder, bundle, writer, stop, interval, settle, batch_size, threads, recursive,
                             on_batch=lambda s: click.echo(s.text(), err=True), on_skipped=warn_once)
    click.echo(f"stopped; this session: {total.text()}", err=True)


@main.command(short_help="Check that this device is ready, with the fix for each failure.")
@model_option
@click.option("--detector", type=click.Path(dir_okay=False), default=None, help="Cell detector .tflite to check. Default: the shipped one.")
@click.option("--output-dir", type=click.Path(), default=".", show_default=True, help="Where results will be written.")
@register_option
def doctor(model, detector, output_dir, register) -> None:
    """Check this device: Python, TFLite runtime, model, cell detector, camera, output folder, slide register, free disk.

    Prints one line per check with the fix for each failure; exits 1 if any check failed.
    """
    from edge_app.doctor import run_checks

    checks = run_checks(model or default_model_path(), output_dir, detector, register)
    for check in checks:
        click.echo(check.line())
    failed = [c.name for c in checks if c.status == "FAIL"]
    click.echo(f"\n{len(failed)} failed: {', '.join(failed)}" if failed else "\nall checks passed")
    sys.exit(1 if failed else 0)


def _resolution(_ctx, _param, value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
        if w > 0 and h > 0:
            return w, h
    except ValueError:
        pass
    raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 1640x1232")


def slide_options(fn):
    """Options shared by `smear` and `capture`: both write one slide's folder."""
    for option in reversed([
        click.option("--out", "-o", "out", type=click.Path(file_okay=False), required=True, help="The slide's output folder (cells.csv, annotated/, parasitized/, summary.json, report.html)."),
        model_option,
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True, help="Per-cell results format."),
        click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="P(Parasitized) at or above which a cell counts as Parasitized, uncorrected (default: the model's counting threshold, corrected for its error rates)."),
        click.option("--detector", type=click.Path(dir_okay=False), default=None,
                     help="Cell detector .tflite (its .json sidecar beside it). Default: the shipped detector."),
        click.option("--segmenter", type=click.Choice(["detector", "classical"]), default="detector", show_default=True,
                     help="How red cells are found: the learned detector, or OpenCV thresholding (no detector model needed)."),
        click.option("--min-cells", type=click.IntRange(1), default=2000, show_default=True, help="Fewer counted cells than this and the slide's parasitemia is flagged as not reliable."),
        click.option("--threads", type=click.IntRange(1, 64), default=_default_threads, show_default="min(4, CPUs)",
                     help="CPU threads for the detector and the classifier."),
        click.option("--embed/--no-embed", default=True, show_default=True,
                     help="Put the annotated fields inside report.html (one file to copy to a phone), or link to their PNGs (a smaller file)."),
        click.option("--resume", is_flag=True, help="Continue this slide: fields already in --out are kept and not counted again."),
        click.option("--overwrite", is_flag=True, help="Start this slide's folder afresh."),
        click.option("--sample", default=None, help="The sample or patient code, recorded with the slide in the register."),
        click.option("--operator", default=None, help="Who made and counted the slide, recorded in the register."),
        register_option,
    ]):
        fn = option(fn)
    return fn


def _load_detector(detector: str | None, segmenter: str, threads: int):
    from edge_app.detect import CellDetector, default_detector_path

    if segmenter == "classical":
        if detector:
            raise click.UsageError("--detector and --segmenter classical contradict each other")
        return None
    try:
        return CellDetector(detector or default_detector_path(), threads=threads)
    except ModelError as exc:
        raise SetupError(f"{exc} (or count with --segmenter classical)") from None


def _open_slide(out, model, fmt, threshold, detector, segmenter, min_cells, threads, embed, resume, overwrite, sample,
                operator, register):
    from edge_app.slide import SlideRun

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other")
    bundle = _load_model(model, threads)
    finder = _load_detector(detector, segmenter, threads)
    try:
        return SlideRun(out, bundle, fmt, resume=resume, overwrite=overwrite, threshold=threshold, min_cells=min_cells,
                        detector=finder, embed=embed, sample=sample, operator=operator,
                        calibration=_laboratory_calibration(register, bundle))
    except (OutputError, OSError) as exc:
        raise SetupError(str(exc)) from None


def _laboratory_calibration(register: str | None, bundle: ModelBundle):
    """This device's laboratory calibration for the model (edge_app.calibration), from the register; None, with a
    warning, when the register cannot be read: a count never depends on it."""
    import sqlite3

    from edge_app.register import RegisterError, connect, site_calibration

    try:
        conn = connect(register)
        try:
            return site_calibration(conn, bundle)
        finally:
            conn.close()
    except (RegisterError, sqlite3.Error, OSError) as exc:
        click.echo(f"warning: the laboratory's calibration cannot be read ({exc}); the shipped error rates are used", err=True)
        return None


def _warn_skipped(folder: str, reason: str) -> None:
    click.echo(f"warning: cannot read folder {folder} ({reason}); its images are skipped", err=True)


def _interactive() -> bool:
    """Whether someone can answer a prompt: standard input is a terminal."""
    return sys.stdin.isatty()


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _field_line(i: int, n: int, count, running, seconds_left: float = 0.0) -> str:
    """One field's line, with the slide so far, a time estimate while fields remain, and the field's warnings below."""
    from edge_app.headline import running_text
    from edge_app.report import white_cells_text

    where = f"field {i}/{n}"
    if count.error:
        line = f"{where} {os.path.basename(count.field)}: ERROR {count.error}"
    else:
        line = (f"{where} {os.path.basename(count.field)}: {count.cells} cells, {count.parasitized} Parasitized"
                f"{white_cells_text(count.white_cells)}; slide so far {running_text(running)}")
    if i < n and seconds_left > 0:
        line += f" [about {duration_text(seconds_left)} left]"
    return "\n".join([line, *(f"  warning: {w}" for w in count.warnings)])


def _finish_slide(run, register: str | None) -> None:
    from edge_app.headline import headline
    from edge_app.report import empty_text
    from edge_app.slide import total_from_summary

    summary = run.finish()
    _register_slide(register, run.out, summary)
    total = run.running_total()
    click.echo(f"slide: {headline(total_from_summary(summary), summary.get('review'), summary.get('calibration')).text}" if total.cells
               else "slide: no red cells found in any field", err=True)
    if total.warning():
        click.echo(f"warning: {total.warning()}", err=True)
    empty = sum(1 for c in run.counts if not c.error and not c.cells and not c.white_cells)
    if empty and total.cells:
        click.echo(f"warning: {empty_text(empty, len(run.counts))}", err=True)
    flagged = [c for c in run.counts if c.warnings]
    if flagged:
        click.echo(f"warning: {len(flagged)} of {len(run.counts)} fields look unlike the training fields "
                   "(see checks.jsonl and the report): treat the count with caution", err=True)
    review = summary.get("review") or {}
    if review.get("cells_to_review"):
        click.echo(f"review: {review['cells_to_review']} cells for a microscopist to confirm or reject in `malaria-edge serve`; "
                   "on a stain unlike the training slides only the reviewed parasitemia is near the truth", err=True)
    click.echo(f"report: {run.out / 'report.html'}", err=True)


def _register_slide(register: str | None, folder: Path, summary: dict) -> None:
    """Index the slide in the register; a register that cannot be written costs a warning, never the count."""
    import sqlite3

    from edge_app.register import RegisterError, connect, index_slide

    if not summary["fields"]:
        return
    try:
        conn = connect(register)
        try:
            index_slide(conn, folder)
        finally:
            conn.close()
    except (RegisterError, sqlite3.Error, OSError) as exc:
        click.echo(f"warning: slide not added to the register ({exc}); the slide folder is complete: "
                   f"`malaria-edge slides rebuild {folder.parent}` adds it later", err=True)


@main.command(short_help="Count a slide from field photographs already taken.")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@slide_options
def smear(paths, out, model, fmt, threshold, detector, segmenter, min_cells, threads, embed, resume, overwrite, sample,
          operator, register) -> None:
    """Count parasitised red cells in microscope field images of one thin smear.

    PATHS are field images (files and/or folders) of one slide. The red cells
    of each field are found (by the learned detector unless --segmenter
    classical), each cell classified; the slide's parasitemia with its 95 %
    interval, an annotated image per field and an HTML report go to --out,
    and the slide into the register (`malaria-edge slides`, `serve`).
    An unreadable field is reported and skipped (exit 1).
    """
    from edge_app.preprocess import ImageError, load_rgb

    try:
        files = expand_paths(paths, recursive=True, on_skipped=_warn_skipped)
    except FileNotFoundError as exc:
        raise SetupError(str(exc)) from None
    if not files:
        raise SetupError("no image files found in the given paths")
    run = _open_slide(out, model, fmt, threshold, detector, segmenter, min_cells, threads, embed, resume, overwrite, sample,
                      operator, register)
    done = run.done
    todo = [f for f in files if f not in done]
    if len(todo) < len(files):
        click.echo(f"resuming: {_plural(len(files) - len(todo), 'field')} already counted, {len(todo)} to count", err=True)
    errors = 0
    started = time.monotonic()
    try:
        for i, path in enumerate(todo, 1):
            try:
                count = run.add_field(path, load_rgb(path))
            except ImageError as exc:
                count = run.add_error(path, str(exc))
                errors += 1
            left = (time.monotonic() - started) / i * (len(todo) - i)
            click.echo(_field_line(i, len(todo), count, run.running_total(), left), err=True)
    except KeyboardInterrupt:
        click.echo("\ninterrupted; fields counted so far are kept; rerun with --resume to finish", err=True)
        _register_slide(register, run.out, run.finish())
        sys.exit(130)
    _finish_slide(run, register)
    sys.exit(1 if errors else 0)


@main.command(short_help="Capture and count a slide's fields with the Pi camera.")
@click.option("--fields", "n_fields", type=click.IntRange(1), required=True, help="How many fields to capture.")
@click.option("--interval", type=click.FloatRange(0.0), default=None, help="Seconds between fields (a motorised stage); default: wait for Enter after moving the slide (with --replay and no terminal: go straight on).")
@click.option("--resolution", default="1640x1232", show_default=True, callback=_resolution, help="Camera still size, WIDTHxHEIGHT.")
@click.option("--replay", type=click.Path(exists=True, file_okay=False), default=None, help="Take frames from this folder instead of the camera (demo, testing).")
@slide_options
def capture(n_fields, interval, resolution, replay, out, model, fmt, threshold, detector, segmenter, min_cells, threads, embed,
            resume, overwrite, sample, operator, register) -> None:
    """Capture N microscope fields with the Pi camera and count parasitised cells in each.

    Each frame is saved under --out/fields/ (so it can be re-counted later
    with `malaria-edge smear`) and counted at once, with the slide's running
    parasitemia printed after every field. Exposure and white balance are
    locked after the first field so the stain looks the same in all of them.
    """
    from PIL import Image

    from edge_app.camera import CameraError, open_camera
    from edge_app.report import save_png

    if interval is None and not _interactive():
        if not replay:
            raise click.UsageError("no terminal to press Enter in between fields: give --interval SECONDS")
        interval = 0.0  # a replay needs no one to move the slide
    frames = Path(out) / "fields"
    old_frames = sorted(frames.glob("field-*.png")) if frames.is_dir() else []
    if old_frames and not (resume or overwrite):
        raise SetupError(f"{frames} already holds {_plural(len(old_frames), 'frame')} of a slide: add --resume to add fields "
                         "to it, or --overwrite to start it afresh (its frames are deleted)")
    run = _open_slide(out, model, fmt, threshold, detector, segmenter, min_cells, threads, embed, resume, overwrite, sample,
                      operator, register)
    if overwrite:
        shutil.rmtree(frames, ignore_errors=True)  # one slide's frames must never sit beside another's
    frames.mkdir(exist_ok=True)
    start = len(run.counts)
    try:
        camera = open_camera(replay, resolution)
    except CameraError as exc:
        _register_slide(register, run.out, run.finish())
        raise SetupError(str(exc)) from None
    status = 0
    try:
        for i in range(1, n_fields + 1):
            if i > 1 or start:
                if interval is None:
                    if click.prompt("Move to the next field, then press Enter (q to stop)", default="", show_default=False, err=True).strip().lower() == "q":
                        break
                else:
                    time.sleep(interval)
            rgb = camera.capture()
            path = frames / f"field-{start + i:04d}.png"
            save_png(Image.fromarray(rgb), path)
            count = run.add_field(str(path), rgb)
            click.echo(_field_line(i, n_fields, count, run.running_total()), err=True)
    except CameraError as exc:
        click.echo(f"error: {exc}; the fields captured so far are kept", err=True)
        status = 1
    except (KeyboardInterrupt, click.Abort):
        click.echo("\ninterrupted; the fields captured so far are kept (add more with --resume)", err=True)
        status = 130
    finally:
        camera.close()
    _finish_slide(run, register)
    sys.exit(status)


def _open_register(register: str | None):
    from edge_app.register import RegisterError, connect

    try:
        return connect(register)
    except RegisterError as exc:
        raise SetupError(str(exc)) from None


def _iso_date(_ctx, _param, value: str | None) -> str | None:
    from edge_app.register import iso_date

    if value is None:
        return None
    try:
        return iso_date(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-12-02") from None


def filter_options(fn):
    """Which slides `slides list` and `slides export` show."""
    from edge_app.register import STATUSES

    for option in reversed([
        click.option("--since", callback=_iso_date, help="Counted on or after this date (YYYY-MM-DD)."),
        click.option("--until", callback=_iso_date, help="Counted on or before this date (YYYY-MM-DD)."),
        click.option("--sample", help="Sample codes containing this."),
        click.option("--status", type=click.Choice(STATUSES), help="Only slides with this review status."),
        register_option,
    ]):
        fn = option(fn)
    return fn


def printable(text: str) -> str:
    """Text as a terminal may show it: every control character (an escape sequence's ESC or CSI, a bell) as "?", so a
    sample code or name typed into a page can never move the cursor, retitle the window or clear the screen."""
    return "".join("?" if unicodedata.category(ch) == "Cc" else ch for ch in text)


@main.group(short_help="The slide register: list, show, export, rebuild.")
def slides() -> None:
    """The slide register: every slide counted on this device, and its review."""


@slides.command("list")
@filter_options
def slides_list(since, until, sample, status, register) -> None:
    """List registered slides, newest first."""
    from edge_app.register import Filters, list_slides
    from edge_app.report import pct

    rows = list_slides(_open_register(register), Filters(since, until, sample, status))
    if not rows:
        click.echo("no slides registered" + (" match" if any((since, until, sample, status)) else ""), err=True)
        return
    click.echo(f"{'id':<24} {'counted':<20} {'sample':<12} {'cells':>7} {'parasitemia':>11} {'reviewed':>9}  status")
    for r in rows:
        click.echo(printable(f"{r['id']:<24} {(r['counted'] or '')[:19]:<20} {(r['sample'] or '-')[:12]:<12} {r['cells']:>7,} "
                             f"{pct(r['parasitemia']):>11} {pct(r['reviewed_parasitemia']):>9}  {r['status']}"))


@slides.command("show")
@click.argument("slide_id")
@register_option
def slides_show(slide_id, register) -> None:
    """Everything the register knows about one slide."""
    from edge_app.register import decisions, get_slide

    conn = _open_register(register)
    slide = get_slide(conn, slide_id)
    if slide is None:
        raise SetupError(f"no slide {slide_id!r} in the register (see `malaria-edge slides list`)")
    for key, value in slide.items():
        click.echo(printable(f"{key:<22} {value if value is not None else '-'}"))
    made = decisions(conn, slide_id)
    if made:
        click.echo(f"decisions ({len(made)}):")
        for d in made:
            click.echo(printable(f"  cell {d['cell']:<10} {d['decision']:<8} {d['reviewer']} {d['decided_at']}"))


@slides.command("export", short_help="Export registered slides as CSV or JSON.")
@filter_options
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write here (default: stdout).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default=None,
              help="Default: from --output's suffix, else csv.")
def slides_export(since, until, sample, status, register, output, fmt) -> None:
    """Export registered slides (automatic and reviewed parasitemia) as CSV or JSON."""
    from edge_app.register import Filters, export, list_slides
    from edge_app.results import write_atomic

    fmt = fmt or ("json" if output and output.lower().endswith(".json") else "csv")
    text = export(list_slides(_open_register(register), Filters(since, until, sample, status)), fmt)
    if output:
        try:
            write_atomic(output, text)
        except OSError as exc:
            raise SetupError(f"cannot write {output}: {exc.strerror or exc}") from None
    else:
        click.echo(text, nl=False)


@slides.command("rebuild", short_help="Remake the register from slide folders.")
@click.argument("roots", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@register_option
def slides_rebuild(roots, register) -> None:
    """Remake the register from the slide folders under ROOTS (the folders are the record; the register, an index)."""
    from edge_app.register import rebuild

    def skipped(folder, reason):
        click.echo(f"warning: {folder} skipped: {reason}", err=True)

    n = rebuild(_open_register(register), roots, on_error=skipped)
    click.echo(f"register rebuilt: {_plural(n, 'slide')}", err=True)


@main.group(short_help="This laboratory's own error rates, from its reviewed slides.")
def calibration() -> None:
    """This laboratory's own counting error rates, learnt from the slides its microscopists fully reviewed.

    Every slide reviewed in `serve` adds what its review showed; later slides
    whose stain matches are corrected with these rates instead of the shipped
    ones, which serve as their prior. See docs/how-it-works.md.
    """


@calibration.command("show")
@model_option
@register_option
def calibration_show(model, register) -> None:
    """What the calibration holds: slides, cells, parasites confirmed, rates with their 95 % intervals."""
    from edge_app.calibration import STAIN_DISTANCE
    from edge_app.register import site_calibration

    bundle = _load_model(model, threads=1)
    conn = _open_register(register)
    cal = site_calibration(conn, bundle)
    if cal is None:
        raise SetupError(f"{bundle.path} has no counting and review error rates to calibrate")
    prior = cal.prior
    click.echo(f"model:               {bundle.name} ({bundle.version}), counting threshold {bundle.counting.threshold:.4f}")
    click.echo(f"shipped rates:       sensitivity {prior.sensitivity:.3f}, false-positive rate {prior.false_positive_rate:.4f} "
               "(measured on other laboratories' fields: the prior)")
    if not cal.slides:
        click.echo("calibration:         none yet: no slide counted with this model has been fully reviewed here "
                   "(since the last reset); counts use the shipped rates")
        return
    d = cal.describe()
    (slo, shi), (flo, fhi) = d["sensitivity_ci95"], d["false_positive_rate_ci95"]
    click.echo(printable(f"calibration:         {_plural(d['slides'], 'slide')} reviewed since {d['since'][:16].replace('T', ' ')}, "
                         f"{d['cells_reviewed']:,} cells, {_plural(d['parasites_confirmed'], 'parasite')} confirmed"))
    click.echo(f"laboratory's rates:  sensitivity {d['sensitivity']:.3f} (95 % CI {slo:.3f}-{shi:.3f}), false-positive rate "
               f"{d['false_positive_rate']:.4f} (95 % CI {flo:.4f}-{fhi:.4f})")
    stain = ", ".join(f"{v:.0f}" for v in d["stain"]) if d["stain"] else "not recorded"
    click.echo(f"stain:               cells RGB {stain}; a slide whose stain is within {STAIN_DISTANCE} (chromaticity) is "
               "corrected with the laboratory's rates, any other with the shipped ones")


@calibration.command("reset")
@register_option
def calibration_reset(register) -> None:
    """Start the calibration afresh (a new stain or microscope): slides reviewed until now no longer count."""
    from edge_app.register import reset_calibration
    from edge_app.slide import now_text

    conn = _open_register(register)
    reset_calibration(conn, now_text())
    click.echo("calibration reset: slides reviewed from now on make the laboratory's rates; until then counts use the "
               "shipped ones", err=True)


@main.command(short_help="Review slides in a browser (the microscopist's review).")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="MALARIA_EDGE_HOST", show_envvar=True,
              help="Address to listen on; anything but this device itself (e.g. 0.0.0.0 for phones on its hotspot) needs "
                   "an access token.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port to listen on.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File holding the access token (or PIN, at least 8 characters) every browser must give once; or set "
                   "MALARIA_EDGE_TOKEN. Required with --host other than localhost.")
@click.option("--token", hidden=True, default=None)
@click.option("--reviewer", default=None, help="Name decisions are recorded under until a reviewer enters theirs in the page.")
@register_option
@model_option
@click.option("--detector", type=click.Path(dir_okay=False), default=None, help="Cell detector for uploaded fields. Default: the shipped one.")
@click.option("--threads", type=click.IntRange(1, 64), default=_default_threads, show_default="min(4, CPUs)",
              help="Threads for classifying uploads.")
@click.option("--max-upload-mb", type=click.IntRange(1, 200), default=25, show_default=True, help="Largest upload accepted.")
@click.option("--verbose", is_flag=True, help="Log one line per request.")
def serve(host, port, token_file, token, reviewer, register, model, detector, threads, max_upload_mb, verbose) -> None:
    """Review slides in a browser: the register, each slide's cells to confirm or reject, and classifying uploads.

    Offline: every page and asset is served by the app itself. Listens on
    this device only unless --host says otherwise, and then every browser
    must give the access token. For a trusted hotspot, not the internet
    (deploy/README.md says what it guarantees).
    """
    import logging

    from edge_app.register import reconcile
    from edge_app.web import create_app, is_loopback, make_server, session_secret
    from edge_app.web_guard import MIN_TOKEN_LENGTH

    if token is not None:
        raise click.UsageError("a token on the command line shows in `ps` to every user of this device: put it in "
                               "MALARIA_EDGE_TOKEN or a file given with --token-file")
    secret = _read_token(token_file) if token_file else os.environ.get("MALARIA_EDGE_TOKEN") or None
    if secret is not None and len(secret) < MIN_TOKEN_LENGTH:
        raise click.UsageError(f"the access token must be at least {MIN_TOKEN_LENGTH} characters "
                               "(e.g. `openssl rand -hex 8`)")
    if not is_loopback(host) and not secret:
        raise click.UsageError(f"--host {host} lets other devices in: give an access token for them to enter "
                               "(MALARIA_EDGE_TOKEN, or --token-file)")
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO if verbose else logging.WARNING)
    conn = _open_register(register)  # a bad register path fails here, not on the first page
    fixed = reconcile(conn, on_error=lambda slide_id, why: click.echo(f"warning: slide {slide_id}: {why}", err=True))
    conn.close()
    if fixed:
        click.echo(f"register: {_plural(fixed, 'slide')} brought up to its review decisions", err=True)
    app = create_app(register=register, token=secret, reviewer=reviewer, model=model, detector=detector, threads=threads,
                     max_upload_mb=max_upload_mb, secret_key=session_secret(register), listen=host)
    try:
        server = make_server(app, host, port, verbose=verbose)
    except OSError as exc:
        raise SetupError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): is another serve running? "
                         "Choose another --port") from None
    shown = "localhost" if is_loopback(host) else host
    click.echo(f"serving on http://{shown}:{port}/ (Ctrl+C to stop)", err=True)
    server.run()


def _read_token(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read the token file {path}: {exc}") from None


if __name__ == "__main__":
    main()
