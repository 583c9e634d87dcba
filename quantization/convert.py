"""Keras model -> TFLite variants (float32, float16, dynamic-range, full int8), each with its sidecar.

The full-int8 variant takes int8 pixels (scale 1, zero point -128 when the
representative data spans 0..255), so the app only shifts raw uint8 pixels
by 128: no float conversion on the Pi, and XNNPACK's int8 kernels apply.
Its first layers may stay in float (`float_layers`, quantization.selective):
the shipped model keeps 16, the default of `malaria-quantize convert`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edge_app.labels import LABELS
from edge_app.model import write_sidecar
from edge_app.preprocess import RESIZE_METHOD
from quantization.bias_correction import correct_output_bias
from quantization.selective import quantize_keeping_first_float

VARIANTS = ("float32", "float16", "dynamic", "int8")


def _converter(model):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model)


def convert_variant(model, variant: str, representative: np.ndarray | None = None, input_type: str = "int8",
                    float_layers: int = 0) -> bytes:
    """Convert one variant; full int8 needs representative pixels (N, H, W, 3) from the training split.

    With `float_layers`, the int8 model's first that many layers compute in
    float (see quantization.selective); its input and output stay integer.
    """
    import tensorflow as tf

    conv = _converter(model)
    if variant == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if representative is None or len(representative) == 0:
            raise ValueError("full int8 conversion needs representative images")
        rep = np.asarray(representative, np.float32)

        def gen() -> Iterable[list[np.ndarray]]:
            for img in rep:
                yield [img[None]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = {"int8": tf.int8, "uint8": tf.uint8}[input_type]
        conv.inference_output_type = tf.int8
        if float_layers:
            if input_type != "int8":
                raise ValueError("an int8 model with float layers takes int8 input only: use --float-layers 0 for uint8 input")
            return quantize_keeping_first_float(conv, gen, float_layers)
    elif variant != "float32":
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    return conv.convert()


def representative_pixels(x: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of training pixels, with one black and one white pixel pinned so the input range is exactly 0..255."""
    idx = np.random.default_rng(seed).choice(len(x), min(count, len(x)), replace=False)
    rep = np.array(x[np.sort(idx)], copy=True)
    rep[0, 0, 0] = 0
    rep[0, 0, 1] = 255
    return rep


def input_dtype(variant: str, int8_input: str = "int8") -> str:
    return int8_input if variant == "int8" else "float32"


def convert_all(
    model,
    out_dir: str | Path,
    name: str,
    meta: dict[str, Any],
    representative: np.ndarray | None = None,
    variants: Iterable[str] = VARIANTS,
    int8_input: str = "int8",
    bias_images: np.ndarray | None = None,
    float_layers: int = 0,
) -> list[Path]:
    """Write `<name>-<variant>.tflite` + `.json` for each variant; `meta` holds size, fit, threshold, temperature, metrics, version.

    With `bias_images` (training pixels), the int8 output is bias-corrected
    against the float model on them (see quantization.bias_correction).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for variant in variants:
        data = convert_variant(model, variant, representative, int8_input, float_layers)
        extra: dict[str, Any] = {"float_layers": float_layers} if variant == "int8" else {}
        if variant == "int8" and bias_images is not None and len(bias_images):
            float_logits = model.predict(np.asarray(bias_images, np.float32), batch_size=256, verbose=0).reshape(-1)
            data, offset = correct_output_bias(data, float_logits, bias_images)
            extra["bias_correction"] = {"logit_offset_removed": offset, "images": int(len(bias_images)), "from": "training split"}
        path = out / f"{name}-{variant}.tflite"
        path.write_bytes(data)
        write_sidecar(path, {
            "name": f"{name}-{variant}",
            "labels": list(LABELS),
            "input": {"size": int(meta["image_size"]), "channels": 3, "dtype": input_dtype(variant, int8_input)},
            "version": str(meta.get("version", "unversioned")),
            "preprocessing": {"function": "edge_app.preprocess.preprocess", "fit": meta["fit"], "resize": RESIZE_METHOD,
                              "color": "RGB", "pixels": "uint8 0..255"},
            "output": "logit of Parasitized; P = sigmoid(logit / temperature)",
            "threshold": float(meta.get("threshold", 0.5)),
            "temperature": float(meta.get("temperature", 1.0)),
            "variant": variant,
            **{k: meta[k] for k in ("metrics", "training", "stain") if k in meta},
            **extra,
        })
        written.append(path)
    return written
