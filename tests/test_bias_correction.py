import json

import numpy as np
import pytest

from tests.conftest import TINY_SIZE

pytest.importorskip("tensorflow")

from quantization.bias_correction import correct_output_bias, shift_output_bias, tflite_logits  # noqa: E402
from quantization.convert import convert_all, convert_variant, representative_pixels  # noqa: E402


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(1).integers(0, 256, (48, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def keras_model(tiny_keras_model):
    """The tiny model with a bias: the converter drops an all-zero one, and a trained model never has that."""
    import keras

    model = keras.models.clone_model(tiny_keras_model)
    weights, _ = tiny_keras_model.get_layer("logit").get_weights()
    model.get_layer("logit").set_weights([weights, np.array([0.3], np.float32)])
    return model


@pytest.fixture(scope="module")
def int8_content(keras_model, pixels):
    return convert_variant(keras_model, "int8", representative_pixels(pixels, 48))


def _output_step(content: bytes) -> float:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=content).get_output_details()[0]["quantization"][0]


def test_shifting_the_bias_moves_every_logit_by_the_offset(int8_content, pixels):
    before = tflite_logits(int8_content, pixels)
    after = tflite_logits(shift_output_bias(int8_content, 0.2), pixels)
    step = _output_step(int8_content)
    inside = before - 0.2 > before.min() + step  # the int8 output range is fixed at calibration: the lowest values saturate
    assert inside.sum() > len(pixels) / 2
    shift = (before - after)[inside]
    assert np.all(np.abs(shift - 0.2) <= step + 1e-6)  # each of the two outputs is rounded to the output step
    assert abs(shift.mean() - 0.2) <= step / 2


def test_the_measured_offset_is_removed(int8_content, pixels):
    int8_logits = tflite_logits(int8_content, pixels)
    float_logits = int8_logits - 0.2  # a float model the int8 file overshoots by 0.2
    corrected, offset = correct_output_bias(int8_content, float_logits, pixels)
    assert offset == pytest.approx(0.2, abs=1e-6)
    inside = int8_logits - 0.2 > int8_logits.min() + _output_step(int8_content)
    residual = (tflite_logits(corrected, pixels) - float_logits)[inside]
    assert abs(residual.mean()) <= _output_step(int8_content) / 2


def test_a_model_whose_output_is_not_a_dense_layer_is_refused(pixels):
    import keras

    inputs = keras.Input((TINY_SIZE, TINY_SIZE, 1))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    content = convert_variant(model, "int8", pixels[..., :1].astype(np.float32))
    with pytest.raises(ValueError, match="not made by a fully connected layer"):
        shift_output_bias(content, 0.5)


def test_convert_all_records_the_correction_in_the_int8_sidecar(keras_model, pixels, tmp_path):
    meta = {"image_size": TINY_SIZE, "fit": "pad", "threshold": 0.5, "temperature": 1.0}
    (int8,) = convert_all(keras_model, tmp_path, "tiny", meta, representative_pixels(pixels, 48), ["int8"], bias_images=pixels)
    block = json.loads(int8.with_suffix(".json").read_text())["bias_correction"]
    assert block["images"] == len(pixels) and block["from"] == "training split"
    float_logits = keras_model.predict(pixels.astype(np.float32), verbose=0).reshape(-1)
    residual = tflite_logits(int8.read_bytes(), pixels) - float_logits
    assert abs(residual.mean()) <= _output_step(int8.read_bytes()) / 2
