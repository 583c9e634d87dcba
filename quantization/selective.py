"""Full int8 with the network's first layers left in float: selective quantization.

The int8 model's disagreement with the float one comes from its first
layers, not its last: the input normalisation and the narrow early
convolutions (16 channels at width 0.35) lose the most when their outputs
are rounded to 256 levels, and every later layer inherits the loss. On the
shipped MobileNetV2's 26 validation patients, label agreement with the float
model at the screening threshold went from 99.22 % (all 66 layers int8) to
99.33, 99.42, 99.53, 99.64 and 99.72 % with the first 4, 8, 12, 16 and 24
layers in float, for 7 KiB more with 16; keeping the last 32 layers in float
instead did not help (99.19 % against 99.27 % with none, before bias
correction, in a one-off check). The early layers are cheap in float
because they are narrow. The sweep: `malaria-quantize convert RUN --variant
int8 --float-layers K --name flK` for each K, then `malaria-quantize
benchmark RUN fl*-int8.tflite --split val`.

TensorFlow's QuantizationDebugger is the documented route to selective
quantization: it names each quantized layer's output and converts with
chosen layers denylisted. Input and output stay int8, so the app feeds the
same raw pixels."""

from __future__ import annotations

import csv
import io
from itertools import islice
from typing import Callable, Iterable

import numpy as np

Dataset = Callable[[], Iterable[list[np.ndarray]]]


def layer_names(converter, dataset: Dataset) -> list[str]:
    """The quantized layers' output tensor names, in execution order (what QuantizationDebugOptions denylists)."""
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=lambda: islice(dataset(), 1))
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    dump.seek(0)
    return [row["tensor_name"] for row in csv.DictReader(dump)]


def quantize_keeping_first_float(converter, dataset: Dataset, count: int) -> bytes:
    """A full-int8 model (int8 input and output) whose first `count` quantized layers compute in float.

    `converter` is set up for full int8 with `dataset` as its representative
    data; both conversions calibrate on it.
    """
    import tensorflow as tf

    names = layer_names(converter, dataset)
    if not 0 <= count < len(names):  # the output layer stays int8: the debugger needs one, and bias correction edits it
        raise ValueError(f"float_layers must be in 0..{len(names) - 1} for this model (the output layer stays int8), got {count}")
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=names[:count], fully_quantize=True)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: islice(dataset(), 1), debug_options=options)
    return debugger.get_nondebug_quantized_model()
