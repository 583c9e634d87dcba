"""Self-checks for a device in the field: each says pass, warn or fail, and how to fix a failure.

A field worker with no developer nearby needs one command that says whether
the Pi can do its job, and what to type when it cannot.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_app.model import ModelBundle, ModelError
from edge_app.runtime import RuntimeMissing, find_runtime

MIN_PYTHON = (3, 10)
MIN_FREE_MB = 200  # room for a slide's annotated fields and report (a few MB a field); below this, runs may stop on a full disk
WARN_FREE_MB = 1024


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "PASS", "WARN" or "FAIL"
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:4s}  {self.name}: {self.detail}"
        return f"{text}\n      fix: {self.fix}" if self.fix and self.status != "PASS" else text


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    shown = ".".join(map(str, version))
    if tuple(version[:2]) >= MIN_PYTHON:
        return Check("python", "PASS", shown)
    return Check("python", "FAIL", f"{shown} is too old (need {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+)",
                 "use Raspberry Pi OS Bookworm (Python 3.11) or newer")


def check_runtime() -> Check:
    try:
        rt = find_runtime()
    except RuntimeMissing as exc:
        return Check("tflite runtime", "FAIL", "none importable", str(exc))
    return Check("tflite runtime", "PASS", f"{rt.name} {rt.version}")


def check_model(path: str | Path) -> Check:
    """Load the bundle (sha256, shape and dtype checks) and run one inference on a blank image."""
    try:
        model = ModelBundle(path)
        p = model.predict(np.zeros((1, model.input.size, model.input.size, 3), np.uint8))
    except ModelError as exc:
        return Check("model", "FAIL", str(exc), "reinstall the app or copy the .tflite and .json from the install bundle again")
    if not np.all(np.isfinite(p)):
        return Check("model", "FAIL", f"{path}: inference returned {p}", "reinstall the model")
    return Check("model", "PASS", f"{model.name} ({Path(path).stat().st_size // 1024} KiB, sha256 verified, test inference ok)")


def check_detector(path: str | Path) -> Check:
    """Load the cell detector (sha256, shapes) and run it on a blank field: `smear` and `capture` find cells with it.

    A missing detector is a warning, not a failure: classification needs none,
    and `--segmenter classical` counts without it.
    """
    from edge_app.detect import CellDetector

    try:
        detector = CellDetector(path)
        found = detector.detect(np.full((detector.height * 2, detector.width * 2, 3), 230, np.uint8))
    except ModelError as exc:
        return Check("cell detector", "WARN", str(exc),
                     "reinstall the app, or count smears with --segmenter classical (less accurate on real fields)")
    if found:
        return Check("cell detector", "FAIL", f"{path}: found {len(found)} cells in a blank field", "reinstall the detector")
    return Check("cell detector", "PASS", f"{detector.name} ({Path(path).stat().st_size // 1024} KiB, sha256 verified, test field ok)")


def check_camera() -> Check:
    """Only capture needs a camera, so a missing one is a warning."""
    try:
        from picamera2 import Picamera2
    except ImportError:
        return Check("camera", "WARN", "picamera2 is not installed (only needed for capture)",
                     "sudo apt install python3-picamera2, and create the venv with --system-site-packages")
    try:
        cameras = Picamera2.global_camera_info()
    except Exception as exc:  # libcamera errors come in many types
        return Check("camera", "WARN", f"picamera2 could not list cameras ({exc})", "check the ribbon cable and run 'rpicam-hello --list-cameras'")
    if not cameras:
        return Check("camera", "WARN", "no camera detected", "check the ribbon cable and that the camera is enabled; 'rpicam-hello --list-cameras'")
    names = ", ".join(str(c.get("Model", "camera")) for c in cameras)
    return Check("camera", "PASS", f"{len(cameras)} found: {names}")


def check_smear() -> Check:
    """OpenCV imports and the classical segmentation finds the two cells of a drawn field."""
    try:
        import cv2

        from edge_app.smear import segment_cells
    except ImportError as exc:
        return Check("smear segmentation", "FAIL", f"OpenCV is not importable ({exc})",
                     "reinstall the app from its bundle (it carries the opencv-python-headless wheel)")
    field = np.full((120, 160, 3), 230, np.uint8)
    for x in (50, 110):
        cv2.circle(field, (x, 60), 20, (200, 90, 130), thickness=-1)
    found = len(segment_cells(field))
    if found != 2:
        return Check("smear segmentation", "FAIL", f"found {found} cells in a test field of 2", "reinstall the app from its bundle")
    return Check("smear segmentation", "PASS", f"OpenCV {cv2.__version__}, test field ok")


def check_disk(folder: str | Path) -> Check:
    free_mb = shutil.disk_usage(folder).free / 2**20
    detail = f"{free_mb:,.0f} MB free at {folder}"
    if free_mb < MIN_FREE_MB:
        return Check("disk", "FAIL", detail, f"free at least {MIN_FREE_MB} MB: move old results to a USB stick")
    if free_mb < WARN_FREE_MB:
        return Check("disk", "WARN", detail, "less than 1 GB left: move old results off the device soon")
    return Check("disk", "PASS", detail)


def _existing_parent(folder: Path) -> Path:
    """The folder itself or its nearest ancestor that exists: where a folder that commands create would live."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(folder: str | Path) -> Check:
    """Write, sync and delete a file where results will go: the same operations a classify run performs.

    A folder that does not exist yet is fine when it can be created: the
    commands create their output folders; its nearest existing ancestor is
    tested instead.
    """
    folder = Path(folder)
    target = _existing_parent(folder)
    if not target.is_dir():
        return Check("output folder", "FAIL", f"{target} is a file, not a folder", f"choose another --output-dir than {folder}")
    try:
        fd, name = tempfile.mkstemp(prefix=".malaria-edge-doctor-", dir=target)
        try:
            os.write(fd, b"ok\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        return Check("output folder", "FAIL", f"cannot write to {target} ({exc.strerror})",
                     f"sudo chown $USER {target}, or choose another folder")
    if target != folder.absolute():
        return Check("output folder", "PASS", f"{folder} does not exist yet; it can be created in {target}")
    return Check("output folder", "PASS", f"{folder} is writable")


def check_register(path: str | Path | None = None) -> Check:
    """Open the slide register (migrating it if it is old) and check its integrity. A register that cannot be
    used is a warning: counts still go into the slide folders, and `slides rebuild` indexes them later."""
    import sqlite3

    from edge_app.register import RegisterError, connect, default_register_path

    shown = Path(path) if path else default_register_path()
    try:
        conn = connect(path)
        try:
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            slides = conn.execute("SELECT COUNT(*) FROM slides").fetchone()[0]
        finally:
            conn.close()
    except (RegisterError, sqlite3.Error) as exc:
        return Check("slide register", "WARN", str(exc), "move it aside and run `malaria-edge slides rebuild SLIDES_FOLDER`")
    if ok != "ok":
        return Check("slide register", "WARN", f"{shown} is damaged ({ok})",
                     "move it aside and run `malaria-edge slides rebuild SLIDES_FOLDER`")
    return Check("slide register", "PASS", f"{shown}: {slides:,} slide{'' if slides == 1 else 's'}")


def run_checks(model: str | Path, output_dir: str | Path, detector: str | Path | None = None,
               register: str | Path | None = None) -> list[Check]:
    from edge_app.detect import default_detector_path

    checks = [check_python(), check_runtime(), check_model(model), check_detector(detector or default_detector_path()),
              check_smear(), check_camera(), check_writable(output_dir), check_register(register)]
    where = _existing_parent(Path(output_dir))
    if where.is_dir():
        checks.append(check_disk(where))
    return checks
