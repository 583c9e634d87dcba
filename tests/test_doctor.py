import sys
import types

from click.testing import CliRunner

from edge_app import doctor
from edge_app.cli import main


def _fake_picamera2(monkeypatch, cameras):
    """A stand-in for picamera2 with its real class method Picamera2.global_camera_info()."""
    mod = types.ModuleType("picamera2")

    class Picamera2:
        @staticmethod
        def global_camera_info():
            return cameras

    mod.Picamera2 = Picamera2
    monkeypatch.setitem(sys.modules, "picamera2", mod)


def test_healthy_device_passes(tiny_model, tiny_detector, tmp_path, monkeypatch):
    _fake_picamera2(monkeypatch, [{"Model": "imx477", "Num": 0}])
    res = CliRunner().invoke(main, ["doctor", "--model", str(tiny_model), "--detector", str(tiny_detector),
                                    "--output-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for name in ("python", "tflite runtime", "model", "cell detector", "smear segmentation", "camera", "output folder",
                 "slide register", "disk"):
        assert any(line.startswith("PASS") and f" {name}:" in line for line in res.output.splitlines()), name
    assert "imx477" in res.output and "all checks passed" in res.output
    assert list(tmp_path.iterdir()) == []  # the write test cleans up after itself


def test_no_camera_is_a_warning_with_the_install_hint(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails
    res = CliRunner().invoke(main, ["doctor", "--model", str(tiny_model), "--output-dir", str(tmp_path)])
    assert res.exit_code == 0
    assert "WARN  camera" in res.output and "python3-picamera2" in res.output and "--system-site-packages" in res.output


def test_camera_listed_but_absent(monkeypatch):
    _fake_picamera2(monkeypatch, [])
    check = doctor.check_camera()
    assert check.status == "WARN" and "no camera" in check.detail


def test_tampered_model_and_bad_folder_fail_with_fixes(model_copy, tmp_path, monkeypatch):
    _fake_picamera2(monkeypatch, [{"Model": "imx477"}])
    model_copy.write_bytes(model_copy.read_bytes()[:-1])
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    res = CliRunner().invoke(main, ["doctor", "--model", str(model_copy), "--output-dir", str(not_a_folder)])
    assert res.exit_code == 1
    assert "FAIL  model" in res.output and "sha256" in res.output and "fix: reinstall" in res.output
    assert "FAIL  output folder" in res.output
    assert "2 failed: model, output folder" in res.output


def test_an_output_folder_still_to_be_made_passes_and_its_disk_is_checked(tiny_model, tmp_path):
    checks = {c.name: c for c in doctor.run_checks(tiny_model, tmp_path / "results" / "today")}
    assert checks["output folder"].status == "PASS" and "does not exist yet" in checks["output folder"].detail
    assert checks["disk"].status in ("PASS", "WARN") and str(tmp_path) in checks["disk"].detail
    assert not (tmp_path / "results").exists()


def test_low_disk_and_old_python(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _: types.SimpleNamespace(free=50 * 2**20))
    assert doctor.check_disk(tmp_path).status == "FAIL"
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _: types.SimpleNamespace(free=500 * 2**20))
    assert doctor.check_disk(tmp_path).status == "WARN"
    assert doctor.check_python((3, 9, 2)).status == "FAIL"
    assert doctor.check_python((3, 11, 2)).status == "PASS"


def test_missing_runtime_fails_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    check = doctor.check_runtime()
    assert check.status == "FAIL" and "pip install ai-edge-litert" in check.fix


def test_unwritable_folder(tmp_path, not_root):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    assert doctor.check_writable(locked).status == "FAIL"


def test_missing_opencv_fails_smear_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    check = doctor.check_smear()
    assert check.status == "FAIL" and "OpenCV is not importable" in check.detail and "bundle" in check.fix


def test_missing_detector_is_a_warning_with_the_classical_way_out(tiny_model, tmp_path):
    res = CliRunner().invoke(main, ["doctor", "--model", str(tiny_model), "--detector", str(tmp_path / "none.tflite"),
                                    "--output-dir", str(tmp_path)])
    assert "WARN  cell detector" in res.output and "--segmenter classical" in res.output


def test_a_damaged_register_is_a_warning_with_the_rebuild_command(tmp_path):
    junk = tmp_path / "register.sqlite3"
    junk.write_bytes(b"not a database " * 500)
    check = doctor.check_register(junk)
    assert check.status == "WARN" and "slides rebuild" in check.fix
    good = doctor.check_register(tmp_path / "fresh" / "register.sqlite3")
    assert good.status == "PASS" and "0 slides" in good.detail
