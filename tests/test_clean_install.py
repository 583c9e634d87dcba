"""The app as a Pi installs it: a plain `pip install .` in its own venv, with no tensorflow.

CI builds that venv and names it in MALARIA_EDGE_APP_VENV; elsewhere these
tests skip.
"""

import csv
import io
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BLUE, RED, cell

VENV = os.environ.get("MALARIA_EDGE_APP_VENV")
pytestmark = pytest.mark.skipif(not VENV, reason="set MALARIA_EDGE_APP_VENV to a venv made by `pip install .`")


def _bin(name: str) -> str:
    return str(Path(VENV) / "bin" / name)


def test_plain_install_has_no_tensorflow():
    res = subprocess.run([_bin("python"), "-c", "import tensorflow"], capture_output=True, text=True)
    assert res.returncode != 0 and "No module named 'tensorflow'" in res.stderr


def test_plain_install_classifies_with_the_shipped_model(tmp_path):
    for i in range(3):
        cell(RED, seed=i).save(tmp_path / f"red_{i}.png")
        cell(BLUE, seed=i).save(tmp_path / f"blue_{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    res = subprocess.run([_bin("malaria-edge"), "classify", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 1, res.stderr  # the broken file makes it 1; everything else must be classified
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 7
    assert [r["status"] for r in rows].count("ok") == 6
    info = subprocess.run([_bin("malaria-edge"), "info"], capture_output=True, text=True, cwd=tmp_path)
    assert info.returncode == 0 and "site-packages/malaria_edge_models/malaria-edge-int8.tflite" in info.stdout


def test_plain_install_counts_a_smear_and_passes_doctor(tmp_path):
    import numpy as np
    from PIL import Image

    from benchmarks.synthetic_fields import compose_field

    rng = np.random.default_rng(0)
    cells = [(np.asarray(cell(BLUE, (50, 54), seed=i)), "Uninfected") for i in range(30)]
    field, truth = compose_field(cells, (400, 500), rng)
    Image.fromarray(field).save(tmp_path / "field.png")
    res = subprocess.run([_bin("malaria-edge"), "smear", str(tmp_path / "field.png"), "--out", str(tmp_path / "slide")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"field 1/1 field.png: {len(truth)} cells" in res.stderr and (tmp_path / "slide" / "report.html").exists()
    doctor = subprocess.run([_bin("malaria-edge"), "doctor", "--output-dir", str(tmp_path)], capture_output=True, text=True)
    assert "PASS  smear segmentation" in doctor.stdout


@pytest.mark.parametrize("command", ["malaria-train", "malaria-quantize"])
def test_plain_install_training_commands_say_what_to_install(command):
    res = subprocess.run([_bin(command), "--help"], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and "pip install 'malaria-edge[train]'" in res.stderr
