"""The picamera2 code path against a fake module that follows picamera2's API, and the replay camera."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from PIL import Image

from edge_app.camera import CameraError, Picamera2Camera, ReplayCamera


class FakePicamera2:
    """Picamera2's calls used by the app; "RGB888" frames come out in [B, G, R] order as on the Pi."""

    instances: list["FakePicamera2"] = []

    def __init__(self, camera_num=0):
        self.camera_num = camera_num
        self.calls: list[tuple] = []
        self.controls: dict = {}
        FakePicamera2.instances.append(self)

    def create_still_configuration(self, main=None, **kwargs):
        return {"use_case": "still", "main": dict(main or {}), **kwargs}

    def configure(self, config):
        self.config = config
        self.calls.append(("configure",))

    def start(self):
        self.calls.append(("start",))

    def capture_array(self, name="main"):
        w, h = self.config["main"]["size"]
        frame = np.zeros((h, w, 3), np.uint8)
        frame[..., 0] = 10  # blue
        frame[..., 2] = 200  # red
        self.calls.append(("capture_array", name, dict(self.controls)))
        return frame

    def capture_metadata(self):
        return {"ExposureTime": 12000, "AnalogueGain": 1.5, "ColourGains": (1.8, 1.4), "Lux": 300.0}

    def set_controls(self, controls):
        self.controls.update(controls)
        self.calls.append(("set_controls", dict(controls)))

    def stop(self):
        self.calls.append(("stop",))

    def close(self):
        self.calls.append(("close",))


@pytest.fixture
def fake_picamera2(monkeypatch):
    mod = types.ModuleType("picamera2")
    mod.Picamera2 = FakePicamera2
    FakePicamera2.instances = []
    monkeypatch.setitem(sys.modules, "picamera2", mod)
    return FakePicamera2


def test_picamera2_frames_are_rgb_and_controls_lock_after_the_first(fake_picamera2):
    cam = Picamera2Camera(resolution=(64, 48), settle_s=0)
    first = cam.capture()
    second = cam.capture()
    cam.close()
    fake = fake_picamera2.instances[0]
    assert fake.config["main"] == {"size": (64, 48), "format": "RGB888"}
    assert first.shape == (48, 64, 3) and first[0, 0].tolist() == [200, 0, 10]  # red first
    assert np.array_equal(first, second)
    captures = [c for c in fake.calls if c[0] == "capture_array"]
    assert captures[0][2] == {}  # the first field is taken with automatic exposure and white balance...
    assert captures[1][2] == {"AeEnable": False, "AwbEnable": False, "ExposureTime": 12000, "AnalogueGain": 1.5,
                              "ColourGains": (1.8, 1.4)}  # ...which are then frozen at the first field's values
    assert [c[0] for c in fake.calls][-2:] == ["stop", "close"]


def test_missing_picamera2_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraError, match="apt install -y python3-picamera2.*--system-site-packages"):
        Picamera2Camera()


def test_camera_that_cannot_open_is_a_clear_error(fake_picamera2, monkeypatch):
    def no_camera(self, camera_num=0):
        raise IndexError("list index out of range")
    monkeypatch.setattr(fake_picamera2, "__init__", no_camera)
    with pytest.raises(CameraError, match="cannot open camera 0.*connected"):
        Picamera2Camera()


def test_replay_camera_yields_folder_images_in_order_then_stops(tmp_path):
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0)]):
        Image.new("RGB", (8, 6), colour).save(tmp_path / f"f{i}.png")
    cam = ReplayCamera(tmp_path)
    assert cam.capture()[0, 0].tolist() == [255, 0, 0]
    assert cam.capture()[0, 0].tolist() == [0, 255, 0]
    with pytest.raises(CameraError, match="all 2 images were used"):
        cam.capture()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match="no images"):
        ReplayCamera(tmp_path / "empty")
    with pytest.raises(CameraError, match="no such file"):
        ReplayCamera(tmp_path / "nowhere")
