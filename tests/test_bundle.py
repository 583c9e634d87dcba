"""The offline bundle: built here (downloads wheels from the package index), installed with pip --no-index."""

import csv
import hashlib
import io
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import BLUE, RED, REPO, cell
from tests.test_cli import OFFLINE_RUNNER

BUILDER = REPO / "deploy" / "build_bundle.py"
# install.sh finds `python3` on PATH: the base interpreter of this venv (the bundle's wheels are built for it), not the venv.
BASE_PATH = f"{Path(sys.base_prefix) / 'bin'}:/usr/bin:/bin"


def _build(target: str, out: Path) -> Path:
    res = subprocess.run([sys.executable, str(BUILDER), "--target", target, "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    (archive,) = out.glob("*.tar.gz")
    return archive


def _unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (folder,) = dest.iterdir()
    return folder


@pytest.fixture(scope="module")
def native_bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    return _unpack(_build("native", root / "dist"), root / "unpacked")


def test_pi_bundle_has_only_aarch64_cp311_or_pure_wheels(tmp_path):
    archive = _build("pi", tmp_path)
    with tarfile.open(archive) as tar:
        wheels = [Path(n).name for n in tar.getnames() if n.endswith(".whl")]
        names = tar.getnames()
    assert any(w.startswith("ai_edge_litert-") and "aarch64" in w for w in wheels)
    assert any(w.startswith("numpy-1.24.2-cp311") for w in wheels)  # Bookworm's numpy, not numpy 2
    assert any(w.startswith("malaria_edge-") for w in wheels)
    for w in wheels:
        py, abi, plat = w[:-4].split("-")[-3:]
        assert plat == "any" or ("aarch64" in plat and abi in ("cp311", "abi3", "none")), w
    assert not any(w.startswith(("tensorflow", "keras")) for w in wheels)
    assert any(n.endswith("/install.sh") for n in names) and any(n.endswith("/SHA256SUMS") for n in names)


#: The installed web app answers its pages from the installed templates and assets.
SERVE_PAGES = """
from edge_app.web import create_app
client = create_app().test_client()
print(*(client.get(url).status_code for url in ("/slides", "/classify", "/static/app.js")))
"""


def test_native_bundle_installs_offline_and_classifies_with_the_network_off(native_bundle, tmp_path):
    prefix = tmp_path / "venv"
    res = subprocess.run(["bash", str(native_bundle / "install.sh"), "--prefix", str(prefix), "--no-system-site"],
                         capture_output=True, text=True, env={"PATH": BASE_PATH, "HOME": str(tmp_path), "PIP_NO_INDEX": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS  model" in res.stdout and "installed:" in res.stdout
    python = prefix / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import tensorflow"], capture_output=True).returncode != 0
    cells = tmp_path / "cells"  # not tmp_path itself: the venv's packages ship images of their own
    cells.mkdir()
    for i in range(2):
        cell(RED, seed=i).save(cells / f"red_{i}.png")
        cell(BLUE, seed=i).save(cells / f"blue_{i}.png")
    run = subprocess.run([str(python), "-c", OFFLINE_RUNNER, "classify", str(cells)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "NETWORK_ATTEMPTS 0 HEAVY_MODULES []" in run.stderr
    assert len(list(csv.DictReader(io.StringIO(run.stdout)))) == 4
    pages = subprocess.run([str(python), "-c", SERVE_PAGES], capture_output=True, text=True, cwd=tmp_path,
                           env={"HOME": str(tmp_path), "PATH": BASE_PATH})
    assert pages.stdout.split() == ["200", "200", "200"], pages.stderr  # templates and assets installed with the app
    again = subprocess.run(["bash", str(native_bundle / "install.sh"), "--prefix", str(prefix), "--no-system-site"],
                           capture_output=True, text=True, env={"PATH": BASE_PATH, "HOME": str(tmp_path)})
    assert again.returncode == 0 and "reusing the virtual environment" in again.stdout  # idempotent


def test_dry_run_changes_nothing(native_bundle, tmp_path):
    prefix = tmp_path / "venv"
    res = subprocess.run(["bash", str(native_bundle / "install.sh"), "--prefix", str(prefix), "--dry-run"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"+ python3 -m venv --system-site-packages {prefix}" in res.stdout and "--no-index" in res.stdout
    assert not prefix.exists()


def test_damaged_bundle_is_refused(native_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(native_bundle, copy)
    wheel = next((copy / "wheels").glob("malaria_edge-*.whl"))
    wheel.write_bytes(wheel.read_bytes()[:-100])
    res = subprocess.run(["bash", str(copy / "install.sh"), "--prefix", str(tmp_path / "venv")], capture_output=True, text=True)
    assert res.returncode == 1 and "damaged" in res.stderr
    assert not (tmp_path / "venv").exists()


def test_bundle_pins_every_wheel_by_version_and_hash(native_bundle):
    lines = (native_bundle / "requirements.txt").read_text().splitlines()
    wheels = sorted((native_bundle / "wheels").glob("*.whl"))
    assert len(lines) == len(wheels)
    for wheel, line in zip(wheels, lines):
        name, version = wheel.name.split("-")[:2]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert line == f"{name.replace('_', '-')}=={version} --hash=sha256:{digest}"


def test_service_install_is_planned_as_a_dedicated_user(native_bundle, tmp_path):
    res = subprocess.run(["bash", str(native_bundle / "install.sh"), "--service", "--dry-run"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "+ python3 -m venv --system-site-packages /opt/malaria-edge" in out and "--require-hashes" in out
    assert "useradd --system" in out and "malaria-edge-watch.service /etc/systemd/system/" in out
    assert "systemctl enable --now malaria-edge-watch" in out


def test_the_reviewer_app_is_installed_for_the_user_whose_slides_it_serves(native_bundle):
    user = pwd.getpwuid(os.getuid()).pw_name
    res = subprocess.run(["bash", str(native_bundle / "install.sh"), "--serve", user, "--dry-run"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert "malaria-edge-serve@.service /etc/systemd/system/" in res.stdout
    assert f"systemctl enable --now malaria-edge-serve@{user}" in res.stdout and "useradd" not in res.stdout
    nobody = subprocess.run(["bash", str(native_bundle / "install.sh"), "--serve", "no-such-user-x", "--dry-run"],
                            capture_output=True, text=True)
    assert nobody.returncode == 2 and "no such user" in nobody.stderr
