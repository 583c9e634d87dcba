"""One builder for every network we train, chosen by name (like timm's create_model).

Every model takes raw pixels in [0, 255] and returns one logit for
Parasitized: normalisation lives inside the model, so the app feeds the
preprocessed uint8 pixels untouched and an int8 model's input quantisation
matches them exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import keras
from keras import layers

ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {}


def register(name: str) -> Callable:
    def deco(fn: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        ARCHITECTURES[name] = fn
        return fn
    return deco


@register("mobilenetv2")
def _mobilenetv2(image_size: int, width: float = 0.35, dropout: float = 0.2) -> keras.Model:
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="normalise")(inputs)  # MobileNetV2's [-1, 1]
    backbone = keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), alpha=width, include_top=False, weights=None, pooling="avg",
    )
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            # Keras's 0.999 suits ImageNet-length runs; from scratch on ~170 steps an epoch the
            # moving statistics would lag for several epochs and validation would see garbage.
            layer.momentum = 0.99
    x = backbone(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name=f"mobilenetv2_{width:g}_{image_size}")


@register("baseline-cnn")
def _baseline_cnn(image_size: int = 64, **_: object) -> keras.Model:
    """The plain 3-conv CNN of the public malaria notebooks, kept as the baseline to beat."""
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = layers.Rescaling(1 / 255.0, name="normalise")(inputs)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, activation="relu", padding="same")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name=f"baseline_cnn_{image_size}")


def build_model(arch: str, image_size: int, width: float = 0.35, init_weights: str | Path | None = None) -> keras.Model:
    """Build a named architecture; `init_weights` loads a local weights file (no downloads here)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    model = ARCHITECTURES[arch](image_size=image_size, width=width)
    if init_weights:
        path = Path(init_weights)
        if not path.is_file():
            raise FileNotFoundError(f"--init-weights file not found: {path}")
        backbone = backbone_of(model) or model
        backbone.load_weights(str(path), skip_mismatch=True)
    return model


def backbone_of(model: keras.Model) -> keras.Model | None:
    """The pretrained-able feature extractor inside a model, if it has one (for head-then-fine-tune)."""
    return next((l for l in model.layers if isinstance(l, keras.Model)), None)
