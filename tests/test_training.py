import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from training.data import discover, load_arrays, patient_folds, patient_id, split_by_patient
from tests.conftest import BLUE, RED, SHARED_DATA, cell


@pytest.mark.parametrize("name,pid", [
    ("C33P1thinF_IMG_20150619_114756a_cell_179.png", "C33P1"),
    ("C47P8thinOriginalOlympusCX21_IMG_1_cell_2.png", "C47P8"),
    ("C51AP12thinF_IMG_1_cell_3.png", "C51AP12"),
    ("C182P143NThinF_IMG_1_cell_4.png", "C182P143N"),
    ("C6NThinF_IMG_1_cell_5.png", "C6N"),
    ("C231ThinF_IMG_1_cell_6.png", "C231"),
    ("C3thin_original_IMG_1_cell_7.png", "C3"),
])
def test_patient_id(name, pid):
    assert patient_id(name) == pid


def test_patient_id_rejects_foreign_names():
    with pytest.raises(ValueError, match="patient id"):
        patient_id("IMG_0001.png")


def make_nih_folder(root: Path, infected: int = 6, healthy: int = 4, cells: int = 6) -> Path:
    """An NIH-layout folder: infected patients with both classes, healthy donors with Uninfected only."""
    for d in ("Parasitized", "Uninfected"):
        (root / d).mkdir(parents=True)
    for p in range(infected):
        for c in range(cells):
            cell(RED, seed=c).save(root / "Parasitized" / f"C{p + 10}P{p + 1}thinF_IMG_1_cell_{c}.png")
            cell(BLUE, seed=c).save(root / "Uninfected" / f"C{p + 10}P{p + 1}thinF_IMG_1_cell_{c + 100}.png")
    for h in range(healthy):
        for c in range(cells):
            cell(BLUE, seed=c + 7).save(root / "Uninfected" / f"C{h + 201}ThinF_IMG_1_cell_{c}.png")
    (root / "Parasitized" / "Thumbs.db").write_bytes(b"junk")
    (root / "Uninfected" / "C201ThinF_IMG_1_cell_99.png").write_bytes(b"broken")
    return root


def test_discover_skips_non_images_and_load_reports_bad_files(tmp_path):
    root = make_nih_folder(tmp_path / "data")
    samples = discover(root)
    assert not any(s.path.name == "Thumbs.db" for s in samples)
    arrays = load_arrays(samples, 24, "pad", cache_dir=tmp_path / "cache", workers=1)
    assert len(arrays.bad) == 1 and "not an image" in arrays.bad[0][1]
    assert arrays.x.shape == (len(samples) - 1, 24, 24, 3)
    cached = load_arrays(samples, 24, "pad", cache_dir=tmp_path / "cache", workers=1)
    assert np.array_equal(cached.x, arrays.x) and list(cached.patient) == list(arrays.patient)


def test_decoding_workers_are_spawned_not_forked(tmp_path, monkeypatch):
    """The training process has TensorFlow's threads (and maybe an interpreter's): forking it is unsafe."""
    def no_fork():
        raise AssertionError("load_arrays forked the process")
    monkeypatch.setattr(os, "fork", no_fork)
    root = make_nih_folder(tmp_path / "data", infected=2, healthy=1, cells=2)
    assert load_arrays(discover(root), 16, "pad", workers=1).x.shape == (10, 16, 16, 3)


def _check_split(samples, seed, folds):
    healthy = {s.patient for s in samples} - {s.patient for s in samples if s.label == 1}
    split = split_by_patient(samples, seed=seed, folds=folds)
    train, val, test = map(set, (split.train, split.val, split.test))
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == {s.patient for s in samples}
    for part in (train, test):
        assert part & healthy and part - healthy  # both kinds of donor on each side
    for fold in patient_folds(samples, folds, seed):
        assert set(fold) & healthy


def test_split_is_by_patient_and_stratified(tmp_path):
    samples = discover(make_nih_folder(tmp_path / "data", infected=10, healthy=5, cells=2))
    _check_split(samples, seed=3, folds=5)
    assert split_by_patient(samples, seed=3) == split_by_patient(samples, seed=3)


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/datasets/malaria not present")
def test_split_on_the_real_data_never_leaks_patients():
    samples = discover(SHARED_DATA)
    assert len({s.patient for s in samples}) > 100
    for seed in (0, 1):
        _check_split(samples, seed=seed, folds=5)


def test_smoke_training_and_evaluation(tmp_path):
    pytest.importorskip("tensorflow")
    from training.evaluate import evaluate_run
    from training.train import TrainConfig, fit

    root = make_nih_folder(tmp_path / "data")
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(root), out=str(out), image_size=32, epochs=1, batch_size=16, cache_dir=str(tmp_path / "cache"))
    fit(cfg)
    for name in ("model.keras", "history.json", "split.json", "config.json"):
        assert (out / name).exists()
    assert "not an image" in (out / "bad_files.txt").read_text()
    result = evaluate_run(out)
    assert 0.0 <= result["threshold"] <= 1.0 and result["temperature"] > 0
    assert result["test"]["n"] > 0
    for plot in ("training_curves", "roc", "pr", "confusion", "reliability", "gradcam"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000
    assert "Held-out test set" in (out / "report.md").read_text()
    assert TrainConfig.load(out / "config.json") == cfg
    # ...and the run converts to bundles the app loads, each scored on the run's test patients.
    from click.testing import CliRunner

    from edge_app.model import ModelBundle
    from quantization.cli import main as quantize

    res = CliRunner().invoke(quantize, ["convert", str(out), "--out", str(tmp_path / "models"), "--name", "smoke",
                                        "--variant", "float32", "--variant", "int8", "--representative", "20"])
    assert res.exit_code == 0, res.output
    for variant in ("float32", "int8"):
        bundle = ModelBundle(tmp_path / "models" / f"smoke-{variant}.tflite")
        assert bundle.input.size == 32 and bundle.threshold == pytest.approx(result["threshold"])
        assert bundle.meta["metrics"]["n"] == result["test"]["n"]
    int8 = ModelBundle(tmp_path / "models" / "smoke-int8.tflite")
    assert int8.input.dtype == "int8" and int8.meta["float_layers"] == 16  # the default: the first layers stay in float
    res_val = CliRunner().invoke(quantize, ["benchmark", str(out), str(int8.path), "--split", "val", "--threads", "1", "--repeats", "5"])
    assert res_val.exit_code == 0, res_val.output
    assert "validation patients" in res_val.output and "smoke-int8.tflite" in res_val.output
    refused = CliRunner().invoke(quantize, ["convert", str(out), "--out", str(tmp_path / "m2"), "--variant", "int8", "--int8-input", "uint8"])
    assert refused.exit_code == 1 and "--float-layers 0" in refused.output
    too_many = CliRunner().invoke(quantize, ["convert", str(out), "--out", str(tmp_path / "m3"), "--variant", "int8", "--float-layers", "999"])
    assert too_many.exit_code == 1 and "float_layers must be in 0.." in too_many.output
    assert "counting threshold" in res.output or "no usable counting threshold" in res.output  # measured on validation


def test_config_file_reproduces_a_run_with_typed_overrides(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import training.cli as cli
    from training.train import TrainConfig

    saved = TrainConfig(data=str(tmp_path), out=str(tmp_path / "first"), image_size=48, epochs=7, seed=5)
    (tmp_path / "config.json").write_text(json.dumps(asdict(saved)))
    seen = []
    monkeypatch.setattr("training.train.fit", lambda cfg: seen.append(cfg))
    monkeypatch.setattr("training.evaluate.evaluate_run", lambda out: None)
    res = CliRunner().invoke(cli.main, ["fit", str(tmp_path), "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "again")])
    assert res.exit_code == 0, res.output
    (cfg,) = seen
    assert cfg.out == str(tmp_path / "again")  # typed: replaces the saved value
    assert (cfg.image_size, cfg.epochs, cfg.seed) == (48, 7, 5)  # not typed: as saved, not the defaults


def test_gradcam_maps_for_both_architectures():
    pytest.importorskip("tensorflow")
    from training.model import build_model
    from training.plots import gradcam

    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    for arch in ("mobilenetv2", "baseline-cnn"):
        cams = gradcam(build_model(arch, 32), x)
        assert cams.shape == (3, 32, 32) and np.all((cams >= 0) & (cams <= 1 + 1e-6)), arch


def test_stain_jitter_recolours_each_cell_on_its_own():
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from training.train import augmenter

    x = np.zeros((64, 16, 16, 3), np.float32)
    x[:, 4:12, 4:12] = (180.0, 150.0, 160.0)  # one stain colour for every cell
    y = np.zeros(64, np.float32)
    tf.random.set_seed(0)
    plain, _ = augmenter(0, 0.0)(tf.constant(x), y)
    jittered, _ = augmenter(0, 0.2)(tf.constant(x), y)

    def green_over_red(batch):
        inside = batch.numpy()[:, 6:10, 6:10].reshape(len(x), -1, 3).mean(1)
        return inside[:, 1] / inside[:, 0]

    # without it, colour jitter is one draw per batch: every cell keeps the same channel balance
    assert np.ptp(green_over_red(plain)) < 1e-3
    assert np.ptp(green_over_red(jittered)) > 0.1


def test_stain_gamma_changes_each_cells_density_not_its_background():
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from training.train import restain

    x = np.zeros((64, 4, 4, 3), np.float32)
    x[:, 1:3, 1:3] = 200 / 255  # pale cytoplasm
    x[:, 1, 1] = 60 / 255  # a dark chromatin dot
    tf.random.set_seed(0)
    out = restain(tf.constant(x), 0.0, 0.4).numpy()
    assert np.all(out[:, 0, 0] == 0)  # the black background stays black
    dot_od, cyto_od = -np.log(out[:, 1, 1]), -np.log(out[:, 2, 2])
    # a power scales every density of a channel alike: the dot stays as many times darker than the cytoplasm
    assert np.allclose(dot_od / cyto_od, np.log(60 / 255) / np.log(200 / 255), rtol=1e-3)
    # each cell and each channel gets its own density, up to exp(+-0.4) times the original
    ratio = cyto_od / -np.log(200 / 255)
    assert ratio.min() < 0.85 and ratio.max() > 1.2 and np.all((ratio > np.exp(-0.4) - 1e-3) & (ratio < np.exp(0.4) + 1e-3))
    assert np.ptp(ratio[:, 0] / ratio[:, 1]) > 0.2


@pytest.mark.parametrize("option", ["stain_jitter", "stain_gamma"])
def test_configs_saved_before_an_augmentation_option_load_without_it(tmp_path, option):
    from training.train import TrainConfig

    old = asdict(TrainConfig())
    del old[option]
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert getattr(TrainConfig.load(tmp_path / "config.json"), option) == 0.0
