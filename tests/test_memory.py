"""Memory stays bounded on the largest images the limits accept: a Pi 4 may have 2 GB for everything."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from edge_app.preprocess import DEFAULT_MAX_PIXELS
from tests.conftest import REPO

LIMIT_MB = 300

MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
print(done.stderr, file=sys.stderr)
"""


def test_classify_on_40_megapixel_16_bit_tiffs_stays_under_300_mb(tiny_model, tmp_path):
    height, width = 5000, 8000
    assert height * width <= DEFAULT_MAX_PIXELS
    ramp = (np.linspace(0, 60000, width, dtype=np.float32)[None, :] + np.linspace(0, 4000, height, dtype=np.float32)[:, None])
    for i in range(4):  # four distinct files, so four decoding threads could each hold one
        pixels = (ramp + 100 * i).astype(np.uint16)
        Image.frombytes("I;16", (width, height), pixels.tobytes()).save(tmp_path / f"frame{i}.tif", compression="tiff_lzw")
    del ramp, pixels
    command = [sys.executable, "-m", "edge_app.cli", "classify", str(tmp_path), "--model", str(tiny_model), "--threads", "4"]
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, cwd=REPO, timeout=300)
    code, peak_mb = (int(v) for v in done.stdout.split()[:2])
    assert code == 0, done.stderr
    assert "4 images" in done.stderr and "errors: 0" in done.stderr
    assert peak_mb < LIMIT_MB, f"peak RSS {peak_mb} MB"
