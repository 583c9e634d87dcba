"""Shared fixtures: tiny models made by the real converters (committed in tests/fixtures/), and synthetic cell images.

The tiny model's logit is 30 * (mean red - mean blue) of the pixels scaled to
[0, 1], so a red "cell" is Parasitized and a blue one Uninfected: tests can
assert real classifications, not just that something was written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.build import TINY_SIZE  # noqa: F401  (the tests import it from here)

from edge_app.extras import missing_train_modules

#: Tests of training and quantization: they need the `train` extra, which a Raspberry Pi does not install. Without it
#: they are not collected, and everything else (the app's tests) still runs.
TRAIN_SIDE = ["test_training.py", "test_training_detector.py", "test_crossval.py", "test_selective.py",
              "test_bias_correction.py", "test_benchmark.py", "test_counting.py", "test_fields.py", "test_real_fields.py",
              "test_fixtures.py", "test_ensemble_ceiling.py", "test_peer_comparison.py"]
_MISSING = missing_train_modules()
collect_ignore = TRAIN_SIDE if _MISSING else []


def pytest_report_header(config) -> str | None:
    if _MISSING:
        return f"train extra missing ({', '.join(_MISSING)}): the app's tests only; not collected: {', '.join(TRAIN_SIDE)}"
    return None


REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "datasets" / "malaria" / "cell_images"

#: The tests run on the device where the README says to run them: nothing they do, nor any command they start, may
#: write into the user's own home (their slide register, the session key beside it). HOME and the XDG folders point
#: into a folder of the test session's own for the whole run, subprocesses included; `pytest_sessionfinish` checks
#: that the user's data folder is as it was.
USER_HOME = Path(os.environ.get("HOME") or Path.home())
USER_DATA = Path(os.environ.get("XDG_DATA_HOME") or USER_HOME / ".local" / "share") / "malaria-edge"
_TEST_HOME = Path(tempfile.mkdtemp(prefix="malaria-edge-test-home-"))
os.environ.update(HOME=str(_TEST_HOME), XDG_DATA_HOME=str(_TEST_HOME / ".local" / "share"),
                  XDG_CACHE_HOME=str(_TEST_HOME / ".cache"), XDG_CONFIG_HOME=str(_TEST_HOME / ".config"))


def user_data_snapshot() -> dict[str, tuple[int, int]]:
    """Every file under the user's malaria-edge data folder with its size and modification time."""
    if not USER_DATA.is_dir():
        return {}
    return {str(f.relative_to(USER_DATA)): (f.stat().st_size, f.stat().st_mtime_ns) for f in USER_DATA.rglob("*") if f.is_file()}


USER_DATA_BEFORE = user_data_snapshot()


def pytest_sessionfinish(session, exitstatus) -> None:
    if user_data_snapshot() != USER_DATA_BEFORE:
        print(f"\nFAILED: the tests changed the user's own data folder {USER_DATA}")
        session.exitstatus = 1


def cell(color: tuple[int, int, int], size: tuple[int, int] = (40, 48), seed: int = 0) -> Image.Image:
    """A filled ellipse of `color` with a little noise on black, like a segmented cell."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - w / 2) / (w / 2.2)) ** 2 + ((yy - h / 2) / (h / 2.2)) ** 2 <= 1
    rng = np.random.default_rng(seed)
    arr = np.zeros((h, w, 3), np.uint8)
    noisy = np.clip(np.array(color)[None, :] + rng.integers(-10, 10, (int(inside.sum()), 3)), 0, 255)
    arr[inside] = noisy.astype(np.uint8)
    return Image.fromarray(arr, "RGB")


RED = (200, 60, 60)
BLUE = (60, 60, 200)


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_keras_model():
    pytest.importorskip("tensorflow")
    from tests.fixtures.build import tiny_keras_classifier

    return tiny_keras_classifier()


@pytest.fixture(scope="session")
def tiny_models(tiny_keras_model, tmp_path_factory) -> dict[str, Path]:
    """The tiny model in all four variants, each with its sidecar (needs TensorFlow to convert)."""
    from tests.fixtures.build import tiny_classifier_variants

    return tiny_classifier_variants(tiny_keras_model, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny int8 classifier, committed (tests/fixtures/build.py makes it): the app's tests need no TensorFlow."""
    return FIXTURES / "tiny-int8.tflite"


@pytest.fixture(scope="session")
def tiny_detector() -> Path:
    """A hand-built cell detector, committed (tests/fixtures/build.py makes it with the training code's converter).

    Its heat map is the darkness of the green channel averaged over about a
    cell (a 5x5 tent on the grid), so it peaks at the centre of every dark
    disc, and it reports 16x16-pixel boxes (4x4 grid cells) at its input
    scale, 64x64 in a field: tests can assert where cells are found.
    """
    return FIXTURES / "tiny-detector.tflite"


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
    """A private copy of the int8 model and its sidecar, safe to tamper with."""
    dst = tmp_path / "m.tflite"
    dst.write_bytes(tiny_model.read_bytes())
    dst.with_suffix(".json").write_text(tiny_model.with_suffix(".json").read_text())
    return dst


@pytest.fixture
def cells_dir(tmp_path) -> Path:
    """A folder tree of 3 red and 3 blue cells, one nested a level down."""
    root = tmp_path / "cells"
    (root / "sub").mkdir(parents=True)
    for i in range(3):
        cell(RED, seed=i).save(root / f"red_{i}.png")
        cell(BLUE, seed=i).save(root / ("sub" if i == 2 else ".") / f"blue_{i}.png")
    return root


@pytest.fixture
def not_root():
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root can read files without permission bits")


@pytest.fixture
def unreadable_sub(monkeypatch):
    """Listing any folder named `sub` fails as a folder without read permission does (even for root, who can read anything)."""
    real = os.scandir

    def scandir(path):
        if os.path.basename(path) == "sub":
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


@pytest.fixture(autouse=True)
def private_register(tmp_path_factory, monkeypatch) -> Path:
    """Every test's slides go to its own register (and the subprocesses it starts inherit it), never the user's;
    outside the test's tmp_path, which some tests expect to hold only what they wrote."""
    path = tmp_path_factory.mktemp("register") / "register.sqlite3"
    monkeypatch.setenv("MALARIA_EDGE_REGISTER", str(path))
    return path


def drawn_slide(tmp_path: Path, tiny_model: Path, n_fields: int = 2, *extra: str, name: str = "slide") -> Path:
    """A slide counted by `malaria-edge smear` (tiny model, classical segmentation) from drawn fields: 24 cells a
    field, every sixth red (called Parasitized), the rest blue."""
    from click.testing import CliRunner

    from benchmarks.synthetic_fields import compose_field
    from edge_app.cli import main

    folder = tmp_path / f"{name}-fields"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for f in range(n_fields):
        cells = [(np.asarray(cell(RED if i % 6 == 0 else BLUE, (44, 50), seed=10 * f + i)), "") for i in range(24)]
        Image.fromarray(compose_field(cells, (400, 560), rng)[0]).save(folder / f"field{f}.png")
    out = tmp_path / name
    res = CliRunner().invoke(main, ["smear", str(folder), "--out", str(out), "--model", str(tiny_model),
                                    "--segmenter", "classical", *extra])
    assert res.exit_code == 0, res.output
    return out
