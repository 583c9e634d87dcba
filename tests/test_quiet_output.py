"""The terminal shows our messages only: no C++ runtime or image-decoder log lines (their reasons go in the error rows)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import REPO


def _corrupt_files(folder, rng):
    """A PNG with a broken checksum and an LZW TIFF with garbage codes: both make their C decoders print to fd 2."""
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    for fmt, kw in (("PNG", {}), ("TIFF", {"compression": "tiff_lzw"})):
        data = io.BytesIO()
        img.save(data, fmt, **kw)
        raw = bytearray(data.getvalue())
        for i in range(len(raw) // 3, len(raw) - 20, 97):
            raw[i] ^= 0x5A
        (folder / f"broken.{fmt.lower()}").write_bytes(raw)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "edge_app.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_classify_prints_no_runtime_or_decoder_lines(tiny_model, cells_dir, tmp_path):
    _corrupt_files(cells_dir, np.random.default_rng(0))
    out = tmp_path / "out.csv"
    res = _run("classify", str(cells_dir), "--model", str(tiny_model), "--output", str(out))
    assert res.returncode == 1, res.stderr  # the job ran; two inputs failed
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "8 images" in lines[-1] and "errors: 2" in lines[-1]
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.open())}
    assert rows["broken.png"]["status"] == "error" and rows["broken.png"]["error"]
    assert rows["broken.tiff"]["status"] == "error" and rows["broken.tiff"]["error"]


def test_info_and_errors_still_reach_the_terminal(tiny_model, tmp_path):
    info = _run("info", "--model", str(tiny_model))
    assert info.returncode == 0 and "INFO:" not in info.stderr + info.stdout and "name:" in info.stdout
    missing = _run("classify", str(tmp_path / "nowhere"), "--model", str(tiny_model))
    assert missing.returncode != 0 and "no such file or folder" in missing.stderr


def test_smear_and_doctor_print_no_runtime_or_decoder_lines(tiny_model, tmp_path):
    from benchmarks.synthetic_fields import compose_field
    from tests.conftest import BLUE, cell

    rng = np.random.default_rng(1)
    fields = tmp_path / "fields"
    fields.mkdir()
    _corrupt_files(fields, rng)
    field, _ = compose_field([(np.asarray(cell(BLUE, (44, 50), seed=i)), "") for i in range(20)], (300, 400), rng)
    Image.fromarray(field).save(fields / "good.png")
    smear = _run("smear", str(fields), "--model", str(tiny_model), "--out", str(tmp_path / "slide"), "--segmenter", "classical")
    assert smear.returncode == 1, smear.stderr  # two fields unreadable
    noise = ("INFO:", "WARNING:", "libpng", "tempfile", "Using code not yet in table", "UserWarning")
    assert not [line for line in smear.stderr.splitlines() if line.strip().startswith(noise) or "TIFF" in line], smear.stderr
    assert "ERROR corrupt image" in smear.stderr and "slide: " in smear.stderr
    doctor = _run("doctor", "--model", str(tiny_model), "--output-dir", str(tmp_path))
    assert "INFO:" not in doctor.stdout + doctor.stderr and "PASS  model" in doctor.stdout


def test_serve_prints_no_queue_lines_by_default_and_a_line_per_request_when_verbose(tmp_path):
    """Reproduces: one slide's review printed 142 of waitress's "Task queue depth is 2" lines. A burst of requests
    larger than the server's threads now prints nothing but the start line; with --verbose, one line a request."""
    import signal
    import threading
    import urllib.request

    from tests.serving import start_serve

    for verbose in (False, True):
        proc, url = start_serve([sys.executable, "-m", "edge_app.cli"], *(["--verbose"] if verbose else []))
        try:
            threads = [threading.Thread(target=lambda: urllib.request.urlopen(url + "/static/app.css", timeout=30).read())
                       for _ in range(40)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=20)
        assert "Task queue depth" not in out
        requests = [line for line in out.splitlines() if "GET /static/app.css 200" in line]
        assert (len(requests) >= 40) if verbose else (out.strip().splitlines() == [f"serving on {url.replace('127.0.0.1', 'localhost')}/ (Ctrl+C to stop)"]), out
