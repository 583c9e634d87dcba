"""Where microscope fields come from: the Pi camera (picamera2) or a folder replayed as if it were one.

Both cameras hand out RGB uint8 arrays of shape (height, width, 3). The replay
camera lets tests and demos run the capture command without hardware.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from edge_app.preprocess import ImageError, load_rgb
from edge_app.sources import expand_paths

INSTALL_HINT = (
    "picamera2 is not importable. On Raspberry Pi OS install it with apt, not pip: "
    "`sudo apt install -y python3-picamera2`, and create the app's venv with "
    "`python3 -m venv --system-site-packages` so the venv sees it (deploy/raspberry-pi/install.sh creates its venv that way)."
)

DEFAULT_RESOLUTION = (1640, 1232)


class CameraError(RuntimeError):
    """The camera cannot be opened or gives no frame; the message says what to do."""


class Camera(Protocol):
    def capture(self) -> np.ndarray:
        """One RGB uint8 frame, (height, width, 3)."""

    def close(self) -> None: ...


class ReplayCamera:
    """Frames from the images in a folder, in name order: capture without hardware."""

    def __init__(self, folder: str | Path):
        try:
            self.paths = expand_paths([folder], recursive=False)
        except FileNotFoundError as exc:
            raise CameraError(str(exc)) from None
        if not self.paths:
            raise CameraError(f"{folder}: no images to replay")
        self._next: Iterator[str] = iter(self.paths)

    def capture(self) -> np.ndarray:
        path = next(self._next, None)
        if path is None:
            raise CameraError(f"replay camera: all {len(self.paths)} images were used")
        try:
            return load_rgb(path)
        except ImageError as exc:
            raise CameraError(f"replay camera: {path}: {exc}") from None

    def close(self) -> None:
        pass


class Picamera2Camera:
    """Still capture with picamera2, exposure and white balance locked after the first frame.

    A smear's stain colour must look the same in every field, or the
    classifier sees a different slide in each; so the automatic controls
    settle once on the first field and are then frozen at those values.
    """

    def __init__(self, resolution: tuple[int, int] = DEFAULT_RESOLUTION, camera_num: int = 0, settle_s: float = 1.0):
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CameraError(INSTALL_HINT) from None
        try:
            self._cam = Picamera2(camera_num)
            # picamera2's "RGB888" is a 24-bit format whose numpy array is in [B, G, R] order.
            self._cam.configure(self._cam.create_still_configuration(main={"size": tuple(resolution), "format": "RGB888"}))
            self._cam.start()
        except Exception as exc:  # libcamera raises RuntimeError, IndexError (no camera) and others
            raise CameraError(f"cannot open camera {camera_num}: {exc}; is it connected and enabled? (`rpicam-hello --list-cameras`)") from None
        self._settle_s = settle_s
        self._locked = False

    def capture(self) -> np.ndarray:
        if not self._locked:
            time.sleep(self._settle_s)  # let auto exposure and white balance converge on the first field
        try:
            bgr = self._cam.capture_array("main")
            if not self._locked:
                self._lock_controls(self._cam.capture_metadata())
        except CameraError:
            raise
        except Exception as exc:
            raise CameraError(f"camera capture failed: {exc}") from None
        return np.ascontiguousarray(bgr[..., 2::-1])

    def _lock_controls(self, metadata: dict) -> None:
        missing = [k for k in ("ExposureTime", "AnalogueGain", "ColourGains") if k not in metadata]
        if missing:
            raise CameraError(f"camera metadata lacks {', '.join(missing)}: cannot lock exposure and white balance")
        self._cam.set_controls({
            "AeEnable": False, "AwbEnable": False,
            "ExposureTime": metadata["ExposureTime"], "AnalogueGain": metadata["AnalogueGain"],
            "ColourGains": metadata["ColourGains"],
        })
        self._locked = True

    def close(self) -> None:
        try:
            self._cam.stop()
        finally:
            self._cam.close()


def open_camera(replay: str | None = None, resolution: tuple[int, int] = DEFAULT_RESOLUTION) -> Camera:
    """The replay camera when a folder is given, else the Pi camera."""
    return ReplayCamera(replay) if replay else Picamera2Camera(resolution)
