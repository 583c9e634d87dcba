import json

import numpy as np
import pytest

from edge_app.model import ModelBundle, ModelError, write_sidecar
from edge_app.preprocess import preprocess
from tests.conftest import BLUE, RED, TINY_SIZE, cell


def _pixels(*colors):
    return np.stack([preprocess(cell(c, seed=i), TINY_SIZE) for i, c in enumerate(colors)])


@pytest.mark.parametrize("variant", ["float32", "float16", "dynamic", "int8"])
def test_every_variant_loads_and_separates_red_from_blue(tiny_models, variant):
    model = ModelBundle(tiny_models[variant])
    p = model.predict(_pixels(RED, BLUE, RED))
    assert p[0] > 0.6 and p[2] > 0.6 and p[1] < 0.4


def test_int8_agrees_with_float(tiny_models):
    x = np.random.default_rng(1).integers(0, 256, (50, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    f = ModelBundle(tiny_models["float32"]).logits(x)
    q = ModelBundle(tiny_models["int8"]).logits(x)
    assert np.max(np.abs(f - q)) < 0.1


def test_batches_of_any_size_give_the_same_answers(tiny_model):
    model = ModelBundle(tiny_model)
    x = _pixels(RED, BLUE, RED, BLUE, RED)
    whole = model.predict(x)
    one_by_one = np.concatenate([model.predict(x[i:i + 1]) for i in range(5)])
    assert np.allclose(whole, one_by_one)
    assert model.predict(x[:0]).shape == (0,)


def test_mirrored_prediction_averages_the_logits_of_both_views(tiny_model, monkeypatch):
    model = ModelBundle(tiny_model)
    # A stand-in network that reads only the top-left pixel: a cell and its mirror image give different logits.
    monkeypatch.setattr(model, "logits", lambda px: px[:, 0, 0, 0].astype(np.float32) / 50)
    x = np.zeros((2, TINY_SIZE, TINY_SIZE, 3), np.uint8)
    x[0, 0, 0, 0], x[0, 0, -1, 0] = 200, 0
    x[1, 0, 0, 0], x[1, 0, -1, 0] = 0, 100
    z = np.array([(200 + 0) / 2, (0 + 100) / 2]) / 50 / model.temperature
    assert np.allclose(model.predict(x, views=2), 1 / (1 + np.exp(-z)))
    assert not np.allclose(model.predict(x), model.predict(x, views=2))


def test_eight_views_average_every_corner_into_the_top_left(tiny_model, monkeypatch):
    model = ModelBundle(tiny_model)
    monkeypatch.setattr(model, "logits", lambda px: px[:, 0, 0, 0].astype(np.float32) / 50)
    x = np.zeros((1, TINY_SIZE, TINY_SIZE, 3), np.uint8)
    x[0, 0, 0, 0], x[0, 0, -1, 0], x[0, -1, 0, 0], x[0, -1, -1, 0] = 200, 100, 40, 0
    # The square's 8 symmetries bring each corner to the top left twice (a turn, and a turn of the mirror image).
    z = 2 * (200 + 100 + 40 + 0) / 8 / 50 / model.temperature
    assert np.allclose(model.predict(x, views=8), 1 / (1 + np.exp(-z)))
    # Views added later in two goes give the same mean as all at once (what classify_cells does for likely cells).
    both = (2 * model.mean_logit(x, range(2)) + 6 * model.mean_logit(x, range(2, 8))) / 8
    assert np.allclose(model.probability(both), model.predict(x, views=8))
    with pytest.raises(ValueError, match="views"):
        model.predict(x, views=9)


def test_temperature_from_sidecar_softens_probabilities(model_copy):
    sharp = ModelBundle(model_copy).predict(_pixels(RED))[0]
    meta = json.loads(model_copy.with_suffix(".json").read_text())
    meta["temperature"] = 4.0
    model_copy.with_suffix(".json").write_text(json.dumps(meta))
    soft = ModelBundle(model_copy).predict(_pixels(RED))[0]
    assert 0.5 < soft < sharp


def test_tampered_model_is_refused(model_copy):
    data = bytearray(model_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        ModelBundle(model_copy)


def test_missing_sidecar_is_refused(model_copy):
    model_copy.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="sidecar"):
        ModelBundle(model_copy)


def test_missing_model_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        ModelBundle(tmp_path / "none.tflite")


def test_garbage_with_matching_hash_is_refused(model_copy):
    meta = json.loads(model_copy.with_suffix(".json").read_text())
    model_copy.write_bytes(b"this is not a flatbuffer" * 100)
    meta.pop("tflite_sha256")
    meta.pop("format")
    write_sidecar(model_copy, meta)
    with pytest.raises(ModelError, match="not a usable TFLite model"):
        ModelBundle(model_copy)


@pytest.mark.parametrize("field,value,message", [
    (("input", "size"), 32, "input shape"),
    (("input", "dtype"), "uint8", "dtype"),
    (("labels",), ["cat", "dog"], "labels"),
    (("threshold",), 1.5, "threshold"),
    (("preprocessing", "fit"), "crop", "fit"),
])
def test_mismatched_sidecar_is_refused(model_copy, field, value, message):
    side = model_copy.with_suffix(".json")
    meta = json.loads(side.read_text())
    node = meta
    for key in field[:-1]:
        node = node[key]
    node[field[-1]] = value
    side.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=message):
        ModelBundle(model_copy)


def test_corrupt_sidecar_is_refused(model_copy):
    model_copy.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable sidecar"):
        ModelBundle(model_copy)


def test_a_model_trained_on_other_pixels_is_refused_and_the_version_is_read(model_copy):
    side = model_copy.with_suffix(".json")
    meta = json.loads(side.read_text())
    assert ModelBundle(model_copy).version == "unversioned"  # the tiny model's converter was given none
    meta["version"] = "2026-12-02-fold0"
    side.write_text(json.dumps(meta))
    assert ModelBundle(model_copy).version == "2026-12-02-fold0"
    del meta["preprocessing"]["resize"]  # as releases 1 and 2 wrote it: trained on Pillow's resize
    side.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="preprocessing resize not recorded.*retrain the model"):
        ModelBundle(model_copy)
