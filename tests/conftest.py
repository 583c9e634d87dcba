"""Shared fixtures: a tiny model built by the real converter, and synthetic cell images.

The tiny model's logit is 30 * (mean red - mean blue) of the pixels scaled to
[0, 1], so a red "cell" is Parasitized and a blue one Uninfected: tests can
assert real classifications, not just that something was written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "datasets" / "malaria" / "cell_images"
TINY_SIZE = 16


def cell(color: tuple[int, int, int], size: tuple[int, int] = (40, 48), seed: int = 0) -> Image.Image:
    """A filled ellipse of `color` with a little noise on black, like a segmented cell."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - w / 2) / (w / 2.2)) ** 2 + ((yy - h / 2) / (h / 2.2)) ** 2 <= 1
    rng = np.random.default_rng(seed)
    arr = np.zeros((h, w, 3), np.uint8)
    noisy = np.clip(np.array(color)[None, :] + rng.integers(-10, 10, (int(inside.sum()), 3)), 0, 255)
    arr[inside] = noisy.astype(np.uint8)
    return Image.fromarray(arr, "RGB")


RED = (200, 60, 60)
BLUE = (60, 60, 200)


@pytest.fixture(scope="session")
def tiny_keras_model():
    pytest.importorskip("tensorflow")
    import keras
    from keras import layers

    inputs = keras.Input((TINY_SIZE, TINY_SIZE, 3))
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(1, name="logit")(x)
    model = keras.Model(inputs, out)
    model.get_layer("logit").set_weights([np.array([[30.0], [0.0], [-30.0]], np.float32), np.zeros(1, np.float32)])
    return model


@pytest.fixture(scope="session")
def tiny_models(tiny_keras_model, tmp_path_factory) -> dict[str, Path]:
    """The tiny model in all four variants, each with its sidecar."""
    from quantization.convert import VARIANTS, convert_all, representative_pixels

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    out = tmp_path_factory.mktemp("models")
    meta = {"image_size": TINY_SIZE, "fit": "pad", "threshold": 0.5, "temperature": 1.0}
    paths = convert_all(tiny_keras_model, out, "tiny", meta, representative_pixels(pixels, 64))
    return dict(zip(VARIANTS, paths))


@pytest.fixture(scope="session")
def tiny_model(tiny_models) -> Path:
    return tiny_models["int8"]


DETECTOR_SHAPE = (64, 96)
DETECTOR_SCALE = 0.25


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory) -> Path:
    """A hand-built cell detector converted by the training code's converter.

    Its heat map is the darkness of the green channel averaged over about a
    cell (a 5x5 tent on the grid), so it peaks at the centre of every dark
    disc, and it reports 16x16-pixel boxes (4x4 grid cells) at its input
    scale, 64x64 in a field: tests can assert where cells are found.
    """
    pytest.importorskip("tensorflow")
    import keras
    from keras import layers

    from training.detector import convert
    from edge_app.detect import STRIDE

    inp = keras.Input((*DETECTOR_SHAPE, 3))
    x = layers.Rescaling(1 / 255.0)(inp)
    dark = layers.Conv2D(1, 1, name="dark")(x)  # 1 - green
    pooled = layers.AveragePooling2D(STRIDE)(dark)
    smooth = layers.Conv2D(1, 5, padding="same", name="smooth")(pooled)
    heat = layers.Conv2D(1, 1, activation="sigmoid", name="heat")(smooth)
    box = layers.Conv2D(4, 1, name="box")(pooled)
    model = keras.Model(inp, [heat, box])
    model.get_layer("dark").set_weights([np.array([[[[0.0], [-1.0], [0.0]]]], np.float32), np.ones(1, np.float32)])
    model.get_layer("smooth").set_weights([(np.outer([1, 2, 3, 2, 1], [1, 2, 3, 2, 1]) / 81.0).astype(np.float32).reshape(5, 5, 1, 1), np.zeros(1, np.float32)])
    model.get_layer("heat").set_weights([np.array([[[[12.0]]]], np.float32), np.array([-3.0], np.float32)])
    model.get_layer("box").set_weights([np.zeros((1, 1, 1, 4), np.float32), np.array([4.0, 4.0, 0.0, 0.0], np.float32)])
    rng = np.random.default_rng(0)
    rep = rng.integers(0, 256, (16, *DETECTOR_SHAPE, 3)).astype(np.uint8)
    rep[:8] = 230
    path = tmp_path_factory.mktemp("detector") / "det.tflite"
    meta = {"kind": "cell-detector", "name": "tiny-detector", "threshold": 0.5,
            "input": {"shape": [*DETECTOR_SHAPE, 3], "dtype": "int8", "scale": DETECTOR_SCALE}}
    return convert(model, rep, path, meta)


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
    """A private copy of the int8 model and its sidecar, safe to tamper with."""
    dst = tmp_path / "m.tflite"
    dst.write_bytes(tiny_model.read_bytes())
    dst.with_suffix(".json").write_text(tiny_model.with_suffix(".json").read_text())
    return dst


@pytest.fixture
def cells_dir(tmp_path) -> Path:
    """A folder tree of 3 red and 3 blue cells, one nested a level down."""
    root = tmp_path / "cells"
    (root / "sub").mkdir(parents=True)
    for i in range(3):
        cell(RED, seed=i).save(root / f"red_{i}.png")
        cell(BLUE, seed=i).save(root / ("sub" if i == 2 else ".") / f"blue_{i}.png")
    return root


@pytest.fixture
def not_root():
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root can read files without permission bits")
