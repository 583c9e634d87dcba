"""The aarch64 bundle installed and run in an emulated arm64 Debian Bookworm userland (deploy/emulate_pi.sh).

Needs a Debian host with access to Debian's package archive (the script
downloads and unpacks qemu-user-static and the arm64 Python itself); skipped
on other hosts.
"""

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from PIL import Image

from benchmarks.synthetic_fields import compose_field
from edge_app.model import ModelBundle, default_model_path
from edge_app.preprocess import preprocess
from edge_app.smear import analyse_field
from tests.conftest import BLUE, RED, REPO, cell

pytestmark = pytest.mark.skipif(not (shutil.which("apt-get") and shutil.which("dpkg")), reason="needs a Debian host (apt-get, dpkg)")


def test_aarch64_bundle_classifies_like_x86_under_emulation(tmp_path):
    build = subprocess.run([sys.executable, str(REPO / "deploy" / "build_bundle.py"), "--target", "pi", "--out", str(tmp_path / "dist")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (bundle,) = (tmp_path / "dist").glob("*.tar.gz")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cell(RED, size=(90, 100), seed=i).save(images / f"red_{i}.png")
        cell(BLUE, size=(100, 90), seed=i).save(images / f"blue_{i}.png")
    fields = tmp_path / "fields"
    fields.mkdir()
    rng = np.random.default_rng(0)
    cells = [(np.asarray(cell(RED if i % 4 == 0 else BLUE, (60, 64), seed=i)), "") for i in range(40)]
    Image.fromarray(compose_field(cells, (480, 640), rng, touching_pairs=3)[0]).save(fields / "field.png")
    res = subprocess.run(["bash", str(REPO / "deploy" / "emulate_pi.sh"), str(bundle), str(images), str(tmp_path / "emu"), str(fields)],
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "emulated (cortex-a72): aarch64 3.11" in res.stdout and "numpy 1.24.2" in res.stdout
    rows = list(csv.DictReader(io.StringIO(res.stdout[res.stdout.index("path,label"):res.stdout.index("summary.json:")])))
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    native = ModelBundle(default_model_path())
    for r in rows:
        expected = native.predict(preprocess(Path(r["path"]), native.input.size, native.fit)[None])[0]
        assert float(r["probability"]) == pytest.approx(expected, abs=1e-4), r  # same int8 model, same answers
    # The smear pipeline (OpenCV's aarch64 wheel on numpy 1.24.2) counts the same cells as here.
    emulated = json.loads(res.stdout[res.stdout.index("summary.json:") + len("summary.json:"):])["total"]
    rgb = np.asarray(Image.open(fields / "field.png"))
    here = analyse_field(native, rgb, native.counting.threshold if native.counting else None)
    assert emulated["cells"] == len(here) > 30
    assert emulated["parasitized"] == sum(r.label == "Parasitized" for r in here)
