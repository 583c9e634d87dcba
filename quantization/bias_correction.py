"""Empirical bias correction of a full-int8 model's output logit.

Rounding in every layer leaves the int8 logit offset from the float one by a
systematic amount (+0.14 to +0.18 logit on the shipped MobileNetV2), so cells
near the decision threshold cross it in one direction and int8 labels drift
from the float model's. The mean offset, measured on training images, is
subtracted from the last layer's int32 bias inside the .tflite: every
runtime then gets the corrected logit, and the sidecar's threshold and
temperature, fitted on the float model, stay valid. This is the bias
correction of Nagel et al. (ICCV 2019), measured on data instead of derived.
"""

from __future__ import annotations

import numpy as np

from edge_app.model import quantize_input
from edge_app.runtime import find_runtime


def tflite_logits(content: bytes, pixels: np.ndarray) -> np.ndarray:
    """The model's output logit for each row of (N, H, W, 3) uint8 pixels, one image per invoke."""
    interp = find_runtime().interpreter_class(model_content=content, num_threads=2)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zero = out["quantization"]
    logits = np.empty(len(pixels), np.float64)
    for i in range(len(pixels)):
        interp.set_tensor(inp["index"], quantize_input(pixels[i:i + 1], inp))
        interp.invoke()
        raw = float(interp.get_tensor(out["index"]).reshape(-1)[0])
        logits[i] = (raw - zero) * scale if scale else raw
    return logits


def shift_output_bias(content: bytes, offset: float) -> bytes:
    """Subtract `offset` (logit units) from the bias of the fully connected layer that produces the model's output."""
    from tensorflow.lite.tools import flatbuffer_utils as fb

    model = fb.read_model_from_bytearray(bytearray(content))
    graph = model.subgraphs[0]
    producer = next((op for op in graph.operators if graph.outputs[0] in op.outputs), None)
    if producer is None or fb.opcode_to_name(model, producer.opcodeIndex) != "FULLY_CONNECTED" or len(producer.inputs) < 3 or producer.inputs[2] < 0:
        raise ValueError("the model's output is not made by a fully connected layer with a bias: cannot correct it")
    bias = graph.tensors[producer.inputs[2]]
    if bias.type != fb.schema_fb.TensorType.INT32 or bias.quantization is None or len(bias.quantization.scale) != 1:
        raise ValueError("the output layer's bias is not a per-tensor int32: not a full-int8 model")
    buffer = model.buffers[bias.buffer]
    values = np.frombuffer(bytes(buffer.data), dtype="<i4").astype(np.int64)
    values -= int(round(offset / float(bias.quantization.scale[0])))
    buffer.data = np.clip(values, -(2**31), 2**31 - 1).astype("<i4").view(np.uint8)
    return bytes(fb.convert_object_to_bytearray(model))


def correct_output_bias(content: bytes, float_logits: np.ndarray, pixels: np.ndarray) -> tuple[bytes, float]:
    """The int8 model with its mean output offset from the float logits removed, and that offset."""
    offset = float(np.mean(tflite_logits(content, pixels) - np.asarray(float_logits, np.float64)))
    return shift_output_bias(content, offset), offset
