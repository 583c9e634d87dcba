"""Fuzzed images: every mutated or truncated file gets its own row (or field result), and no run ends in a traceback."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_app.cli import main
from edge_app.results import read_rows
from edge_app.slide import CELL_FIELDS

FORMATS = {"PNG": {}, "JPEG": {"quality": 90}, "TIFF": {"compression": "tiff_lzw"}, "BMP": {}, "GIF": {}, "WEBP": {"quality": 80}}


def _seed_images(rng) -> dict[str, bytes]:
    """One small valid file per format: a cell-like blob, so unmutated bytes decode to something real."""
    yy, xx = np.mgrid[0:48, 0:56]
    img = np.zeros((48, 56, 3), np.uint8)
    img[((xx - 28) / 24) ** 2 + ((yy - 24) / 20) ** 2 <= 1] = (190, 140, 160)
    img = np.clip(img + rng.integers(0, 12, img.shape), 0, 255).astype(np.uint8)
    out = {}
    for fmt, kw in FORMATS.items():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, fmt, **kw)
        out[fmt] = buf.getvalue()
    return out


def fuzzed_files(folder, n: int, seed: int = 0) -> list[str]:
    """`n` files: byte flips, inserted and deleted runs, and truncations of valid files of every format."""
    rng = np.random.default_rng(seed)
    seeds = _seed_images(rng)
    names = []
    for i in range(n):
        fmt = list(FORMATS)[i % len(FORMATS)]
        data = bytearray(seeds[fmt])
        kind = i // len(FORMATS) % 4
        if kind == 0:  # flip a few bytes anywhere, the header included
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
        elif kind == 1:  # truncate
            data = data[:int(rng.integers(1, len(data)))]
        elif kind == 2:  # insert garbage
            at = int(rng.integers(len(data)))
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        else:  # delete a run
            at = int(rng.integers(len(data)))
            del data[at:at + int(rng.integers(1, 64))]
        name = f"f{i:04d}.{fmt.lower()}"
        (folder / name).write_bytes(bytes(data))
        names.append(name)
    return names


def test_classify_survives_fuzzed_files_with_one_row_each(tiny_model, tmp_path):
    folder = tmp_path / "fuzz"
    folder.mkdir()
    names = fuzzed_files(folder, 360)
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(main, ["classify", str(folder), "--model", str(tiny_model), "--output", str(out)])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert res.exit_code in (0, 1) and "Traceback" not in res.output
    rows = read_rows(str(out), "csv")
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in rows) == sorted(names)
    assert all((r["status"] == "ok") == bool(r["label"]) and (r["status"] == "error") == bool(r["error"]) for r in rows)
    errors = [r for r in rows if r["status"] == "error"]
    assert 0 < len(errors) < len(rows)  # some mutations survive decoding, some do not: both paths were taken


def test_smear_survives_fuzzed_fields_with_one_result_each(tiny_model, tmp_path):
    folder = tmp_path / "fuzz"
    folder.mkdir()
    names = fuzzed_files(folder, 48, seed=1)
    out = tmp_path / "slide"
    res = CliRunner().invoke(main, ["smear", str(folder), "--model", str(tiny_model), "--out", str(out),
                                    "--segmenter", "classical", "--min-cells", "1"])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert res.exit_code in (0, 1) and "Traceback" not in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(f["field"].rsplit("/", 1)[-1] for f in summary["fields"]) == sorted(names)
    rows = read_rows(str(out / "cells.csv"), "csv", CELL_FIELDS)
    assert {r["field"] for r in rows} == {f["field"] for f in summary["fields"]}


@pytest.mark.parametrize("kind", [TypeError, KeyError, IndexError])
def test_an_exception_inside_pillow_is_the_files_fault(tmp_path, monkeypatch, kind):
    """Whatever Pillow raises while decoding becomes the file's error; the same exception from our code is a bug."""
    import PIL.TiffImagePlugin as tiff

    from edge_app.preprocess import ImageError, load_rgb

    path = tmp_path / "x.tiff"
    Image.new("RGB", (8, 8)).save(path)
    source = "def load(self, *args, **kwargs):\n    raise kind('bad tag')\n"
    for filename, fault in ((tiff.__file__, "file"), (__file__, "ours")):  # as if Pillow's plugin raised it; then our code
        namespace = {"kind": kind}
        exec(compile(source, filename, "exec"), namespace)
        monkeypatch.setattr(tiff.TiffImageFile, "load", namespace["load"])
        if fault == "file":
            with pytest.raises(ImageError, match=f"corrupt image: {kind.__name__}"):
                load_rgb(path)
        else:
            with pytest.raises(kind):
                load_rgb(path)
