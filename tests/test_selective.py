import json

import numpy as np
import pytest

from tests.conftest import TINY_SIZE

pytest.importorskip("tensorflow")

from edge_app.model import ModelBundle  # noqa: E402
from quantization.convert import convert_all, convert_variant, representative_pixels  # noqa: E402


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(2).integers(0, 256, (32, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def conv_model():
    """Two convolutions, a mean and a dense logit: enough layers to keep some in float and not others."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((TINY_SIZE, TINY_SIZE, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(1, bias_initializer="ones")(x))


def _ops(content: bytes) -> list[tuple[str, str]]:
    """(op name, output tensor type) of every operator, in execution order."""
    from tensorflow.lite.tools import flatbuffer_utils as fb

    model = fb.read_model_from_bytearray(bytearray(content))
    graph = model.subgraphs[0]
    types = {v: k for k, v in vars(fb.schema_fb.TensorType).items() if not k.startswith("_")}
    return [(fb.opcode_to_name(model, op.opcodeIndex), types[graph.tensors[op.outputs[0]].type]) for op in graph.operators]


def _io(content: bytes):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content)
    return interp.get_input_details()[0], interp.get_output_details()[0]


def test_the_first_layers_compute_in_float_and_the_rest_in_int8(conv_model, pixels):
    content = convert_variant(conv_model, "int8", representative_pixels(pixels, 32), float_layers=1)
    # The converter folds the normalisation into the first convolution, the model's first layer.
    assert _ops(content) == [("DEQUANTIZE", "FLOAT32"), ("CONV_2D", "FLOAT32"), ("QUANTIZE", "INT8"),
                             ("CONV_2D", "INT8"), ("MEAN", "INT8"), ("FULLY_CONNECTED", "INT8")]
    inp, out = _io(content)
    assert inp["dtype"] == np.int8 and tuple(inp["quantization"]) == (1.0, -128)  # the app's raw-pixel input, unchanged
    assert out["dtype"] == np.int8


def test_more_float_layers_than_the_model_has_is_refused(conv_model, pixels):
    with pytest.raises(ValueError, match="float_layers must be in 0.."):
        convert_variant(conv_model, "int8", representative_pixels(pixels, 32), float_layers=99)


def test_float_layers_need_int8_input(conv_model, pixels):
    with pytest.raises(ValueError, match="int8 input only"):
        convert_variant(conv_model, "int8", representative_pixels(pixels, 32), input_type="uint8", float_layers=2)


def test_the_app_runs_a_model_with_float_layers_and_its_sidecar_says_so(conv_model, pixels, tmp_path):
    meta = {"image_size": TINY_SIZE, "fit": "pad", "threshold": 0.5, "temperature": 1.0}
    (int8,) = convert_all(conv_model, tmp_path, "sel", meta, representative_pixels(pixels, 32), ["int8"], float_layers=2)
    assert json.loads(int8.with_suffix(".json").read_text())["float_layers"] == 2
    p = ModelBundle(int8).predict(pixels)
    expected = 1 / (1 + np.exp(-conv_model.predict(pixels.astype(np.float32), verbose=0).reshape(-1)))
    assert np.allclose(p, expected, atol=0.05)
    from click.testing import CliRunner

    from edge_app.cli import main

    info = CliRunner().invoke(main, ["info", "--model", str(int8)])
    assert info.exit_code == 0 and "first 2 layers in float" in info.output
