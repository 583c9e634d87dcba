"""Train the red-cell detector on hand-boxed real fields, tune its threshold, and ship it as an int8 TFLite bundle.

The network (see `edge_app.detect`) is trained CenterNet-style: a Gaussian
bump at every boxed cell's centre on a grid of 4-pixel cells, the box's
width and height and the centre's offset regressed at the centre. Training
samples are random crops of the fields at a random magnification (0.7-1.4x
the training fields'), in any orientation, with the stain's colour, the
lighting and the focus varied, so the detector holds on other microscopes
and stains than the training fields'. Its decision threshold is the one that
makes detections most match the boxes on the training fields; the fields of
a held-out run (`test_run`) are never seen.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_app.detect import KIND, STRIDE, CellDetector, background_colour, decode, field_input, optical_density, resize_field
from edge_app.model import update_sidecar, write_sidecar
from edge_app.preprocess import ImageError, load_rgb
from training.fields import Box, load_annotations, pooled, runs_of, score_field

#: Detector input pixels per field pixel: 80 px cells of a 1280x960 field become 20 px.
SCALE = 0.25
#: The training fields' size: the input holds one whole field at the detector's scale.
FIELD_SHAPE = (960, 1280)
#: Box sizes are regressed in grid cells (about 5 for a cell): IoU >= 0.5 with a hand-drawn box needs them right.
SIZE_WEIGHT = 0.5


@dataclass
class DetectorConfig:
    data: str = "../shared/datasets/iml_malaria"
    out: str = "runs/detector"
    test_run: int | None = None  # index of the held-out run of consecutive frames; None trains on all
    scale: float = SCALE  # detector input pixels per field pixel
    crop: int = 96  # training crop side in input pixels
    channels: float = 1.0  # multiplies every layer's channels (1.0: 90 k parameters)
    batch_size: int = 16
    steps: int = 3000
    learning_rate: float = 2e-3
    scale_range: tuple[float, float] = (0.7, 1.4)
    stain_jitter: float = 0.2
    stain_input: str = "rgb"  # "od": the detector sees optical density normalised per field (edge_app.detect)
    relight: float = 0.5  # share of crops re-lit and re-stained as another laboratory's (`relit`); 0: the training fields' own
    max_blur: float = 2.0  # the strongest focus blur of a training crop (Gaussian sigma, input pixels); 1.2 until 2026-12-06
    points: str | None = None  # another laboratory's point-labelled fields (images/, labels/) to train on too (`point_fields`)
    points_test_block: int | None = None  # hold out this block of consecutive point-labelled fields
    seed: int = 0
    max_fields: int | None = None  # for smoke runs


@dataclass(frozen=True)
class Field:
    name: str
    rgb: np.ndarray  # at the detector's scale times the largest magnification, so every augmentation only shrinks
    boxes: np.ndarray  # (N, 4) x, y, w, h in the pixels of `rgb`
    lamp: np.ndarray | None = None  # (3,) the light through the slide where nothing absorbs it (`lamp_colour`)


def load_fields(data: str | Path, names: list[str], annotations: dict[str, list[Box]], scale: float,
                stain: str = "rgb") -> list[Field]:
    """The fields and their boxes resized by `scale` (the detector's scale times the largest training magnification)."""
    fields = []
    for name in names:
        rgb = load_rgb(Path(data) / "images" / name)
        boxes = np.array([[b.x, b.y, b.w, b.h] for b in annotations[name]], np.float32).reshape(-1, 4) * scale
        small = resize_field(rgb, scale)
        fields.append(Field(name, optical_density(small) if stain == "od" else small, boxes,
                            lamp_colour(small) if stain == "rgb" else None))
    return fields


def lamp_colour(rgb: np.ndarray) -> np.ndarray:
    """The light through the slide where nothing absorbs it: the field's brightest few percent, per channel (as in
    edge_app.detect.optical_density)."""
    return np.percentile(rgb.reshape(-1, 3).astype(np.float32) + 1.0, 97, axis=0)


#: How another laboratory's fields differ from the training fields' (`relit`): the stain's optical density scaled
#: from a quarter (faint, pale cells) to 1.6 times, each channel by up to another 25 % (another stain's hue), and
#: the lamp from half to 1.15 times as bright, each channel by up to 15 % (a dim, bluish or yellowish light).
DENSITY_RANGE = (0.25, 1.6)
DENSITY_HUE = 0.25
LAMP_RANGE = (0.5, 1.15)
LAMP_TINT = 0.15


def relit(img: np.ndarray, lamp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A crop as another laboratory's stain and microscope would show it: its optical density (light absorbed,
    -log of the pixel over the lamp) scaled per channel, then lit by another lamp.

    Channel gains alone (`sample`) cannot make a faint stain under a dim lamp,
    the commonest way another laboratory's fields differ: cells of a faint
    stain differ from the background by a small share of its brightness
    whatever the light.
    """
    od = np.maximum(np.log(lamp / (img.astype(np.float32) + 1.0)), 0.0)
    density = np.exp(rng.uniform(*np.log(DENSITY_RANGE))) * rng.uniform(1 - DENSITY_HUE, 1 + DENSITY_HUE, 3)
    light = lamp * np.exp(rng.uniform(*np.log(LAMP_RANGE))) * rng.uniform(1 - LAMP_TINT, 1 + LAMP_TINT, 3)
    return np.clip(np.minimum(light, 256.0) * np.exp(-od * density) - 1.0, 0, 255)


#: A point-labelled field is trained on only when its points are on at least this share of the cells the boxing
#: detector finds there: fields that label only some cells (the unusual shapes) would teach that the rest are not cells.
FULLY_LABELLED = 0.8


def point_boxes(points: np.ndarray, found: np.ndarray) -> np.ndarray | None:
    """Boxes for a field's labelled points, from the boxes a detector found there (N x 4, x, y, w, h), or None when the
    points label too few of those cells (see FULLY_LABELLED).

    A point held by a found box, one to one, gets that box; the others a
    square of the field's median box side round the point: the points say
    where each cell is, the detector how large a box its annotators drew.
    """
    from scipy.optimize import linear_sum_assignment

    if not len(points) or not len(found):
        return None
    px, py = points[:, :1], points[:, 1:]
    x, y, w, h = (found[:, i][None, :] for i in range(4))
    inside = (px >= x) & (px <= x + w) & (py >= y) & (py <= y + h)
    gap = np.hypot((px - x - w / 2) / np.maximum(w, 1), (py - y - h / 2) / np.maximum(h, 1))
    rows, cols = linear_sum_assignment(np.where(inside, gap - 2.0, 0.0))
    pairs = [(r, c) for r, c in zip(rows, cols) if inside[r, c]]
    if len(pairs) < FULLY_LABELLED * len(found):
        return None
    side = float(np.median(np.maximum(found[:, 2], found[:, 3])))
    boxes = np.column_stack([points - side / 2, np.full((len(points), 2), side)]).astype(np.float32)
    for r, c in pairs:
        boxes[r] = found[c]
    return boxes


def point_fields(cfg: DetectorConfig, typical_side: float) -> list[Field]:
    """Another laboratory's point-labelled fields, boxed (`point_boxes`) by the shipped detector, each at the scale that
    brings its median box to `typical_side` (the box-labelled training fields' median, in field pixels) at the
    detector's scale; the held-out block (`points_test_block`) and fields labelled only in part are left out."""
    from edge_app.detect import default_detector_path
    from training.fields import load_points

    points = load_points(Path(cfg.points) / "labels")
    images = {p.stem: p for p in (Path(cfg.points) / "images").iterdir() if p.stem in points}
    boxer = CellDetector(default_detector_path())
    fields = []
    for k, block in enumerate(runs_of(sorted(images))):
        if k == cfg.points_test_block:
            continue
        for stem in block:
            rgb = load_rgb(images[stem])
            found = np.array([[d.x, d.y, d.width, d.height] for d in boxer.detect(rgb)], np.float32).reshape(-1, 4)
            boxes = point_boxes(points[stem], found)
            if boxes is None:
                continue
            scale = cfg.scale * cfg.scale_range[1] * typical_side / float(np.median(np.maximum(boxes[:, 2], boxes[:, 3])))
            small = resize_field(rgb, scale)
            fields.append(Field(images[stem].name, small, boxes * scale, lamp_colour(small)))
    return fields


def targets(boxes: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Heat (grid, grid, 1) and box targets (grid, grid, 5: width, height, dx, dy, mask) for boxes in crop pixels."""
    heat = np.zeros((grid, grid), np.float32)
    box = np.zeros((grid, grid, 5), np.float32)
    yy, xx = np.mgrid[0:grid, 0:grid].astype(np.float32)
    for x, y, w, h in boxes:
        cx, cy = (x + w / 2) / STRIDE, (y + h / 2) / STRIDE
        ix, iy = int(np.floor(cx)), int(np.floor(cy))
        if not (0 <= ix < grid and 0 <= iy < grid):
            continue
        sigma = max(0.5, min(w, h) / STRIDE / 6)
        heat = np.maximum(heat, np.exp(-((xx - cx + 0.5) ** 2 + (yy - cy + 0.5) ** 2) / (2 * sigma ** 2)))
        heat[iy, ix] = 1.0
        box[iy, ix] = (w / STRIDE, h / STRIDE, cx - ix - 0.5, cy - iy - 0.5, 1.0)
    return heat[..., None], box


def sample(field: Field, crop: int, rng: np.random.Generator, cfg: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
    """One augmented training crop and its boxes."""
    lo, hi = cfg.scale_range
    f = rng.uniform(lo, hi) / hi
    span = int(round(crop / f))  # the field pixels that shrink to one crop
    img = field.rgb
    h, w = img.shape[:2]
    if h < span or w < span:
        pad = np.empty((max(h, span), max(w, span), 3), np.uint8)
        pad[:] = background_colour(img)
        pad[:h, :w] = img
        img, (h, w) = pad, pad.shape[:2]
    y0, x0 = int(rng.integers(0, h - span + 1)), int(rng.integers(0, w - span + 1))
    img = img[y0:y0 + span, x0:x0 + span]
    img = (resize_field(img, crop / span) if span != crop else img).astype(np.float32)
    if cfg.relight and field.lamp is not None and rng.random() < cfg.relight:
        img = relit(img, field.lamp, rng)
    boxes = (field.boxes - np.array([x0, y0, 0, 0], np.float32)) * (crop / span)
    # Any orientation: a smear has no up.
    if rng.random() < 0.5:
        img = img[:, ::-1]
        boxes[:, 0] = crop - boxes[:, 0] - boxes[:, 2]
    for _ in range(int(rng.integers(0, 4))):
        img = np.rot90(img)  # counter-clockwise: (x, y) -> (y, crop - x)
        boxes = np.stack([boxes[:, 1], crop - boxes[:, 0] - boxes[:, 2], boxes[:, 3], boxes[:, 2]], axis=1)
    # Stain, lighting and focus: channel gains, and anything from vivid to almost grey staining.
    img = img * rng.uniform(1 - cfg.stain_jitter, 1 + cfg.stain_jitter, 3)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * rng.uniform(0.4, 1.6)
    img = (img - img.mean()) * rng.uniform(0.8, 1.2) + img.mean() * rng.uniform(0.85, 1.15)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, cfg.max_blur))
    img = img + rng.normal(0, rng.uniform(0, 4), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def build(height: int | None = None, width: int | None = None, channels: float = 1.0):
    """The detector network: a small depthwise-separable encoder-decoder to a stride-4 grid.

    `channels` widens (or thins) every layer alike, so capacity can be traded
    against the Pi's time without changing what the network computes.
    """
    import keras
    from keras import layers

    def n(f):
        return max(8, int(round(f * channels / 8)) * 8)

    def cbr(x, f, s=1):
        x = layers.Conv2D(f, 3, strides=s, padding="same", use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization()(x))

    def sep(x, f, s=1):
        x = layers.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.Conv2D(f, 1, use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization()(x))

    inp = keras.Input((height, width, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inp)
    c1 = cbr(x, n(16), 2)
    c2 = sep(sep(c1, n(32), 2), n(32))
    c3 = sep(sep(c2, n(64), 2), n(64))
    c4 = sep(sep(sep(c3, n(96), 2), n(96)), n(96))
    u = layers.Concatenate()([layers.UpSampling2D(2, interpolation="bilinear")(c4), c3])
    u = sep(u, n(64))
    u = layers.Concatenate()([layers.UpSampling2D(2, interpolation="bilinear")(u), c2])
    u = sep(sep(u, n(48)), n(48))
    heat = layers.Conv2D(1, 1, activation="sigmoid", name="heat",
                         bias_initializer=keras.initializers.Constant(-2.19))(cbr(u, n(32)))
    box = layers.Conv2D(4, 1, name="box")(cbr(u, n(32)))
    return keras.Model(inp, [heat, box], name="cell_detector")


def _losses(heat_true, box_true, heat_pred, box_pred):
    import tensorflow as tf

    p = tf.clip_by_value(heat_pred, 1e-4, 1 - 1e-4)
    pos = tf.cast(heat_true >= 0.999, tf.float32)
    n = tf.maximum(tf.reduce_sum(pos), 1.0)
    focal = -tf.reduce_sum(pos * (1 - p) ** 2 * tf.math.log(p)
                           + (1 - pos) * (1 - heat_true) ** 4 * p ** 2 * tf.math.log(1 - p)) / n
    mask = box_true[..., 4:5]
    err = tf.abs(box_pred - box_true[..., :4]) * mask
    size = tf.reduce_sum(err[..., :2]) / n
    offset = tf.reduce_sum(err[..., 2:]) / n
    return focal, size, offset


def train(cfg: DetectorConfig):
    """Train on the fields outside the held-out run; returns the Keras model and the training fields' names."""
    import keras
    import tensorflow as tf

    annotations = load_annotations(Path(cfg.data) / "annotations.json")
    runs = runs_of(sorted(annotations))
    names = [n for i, r in enumerate(runs) if i != cfg.test_run for n in r][:cfg.max_fields]
    fields = load_fields(cfg.data, names, annotations, cfg.scale * cfg.scale_range[1], cfg.stain_input)
    if cfg.points:
        typical = float(np.median([max(b.w, b.h) for n in names for b in annotations[n]]))
        boxed = len(fields)
        fields += point_fields(cfg, typical)
        print(f"{len(fields) - boxed} point-labelled fields of {cfg.points} added to {boxed} boxed ones", file=sys.stderr)
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build(channels=cfg.channels)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, cfg.steps, alpha=0.02,
                                                      warmup_target=None)
    opt = keras.optimizers.Adam(schedule)
    grid = cfg.crop // STRIDE

    @tf.function
    def step(x, heat_t, box_t):
        with tf.GradientTape() as tape:
            heat_p, box_p = model(x, training=True)
            focal, size, offset = _losses(heat_t, box_t, heat_p, box_p)
            loss = focal + SIZE_WEIGHT * size + offset
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return focal, size, offset

    def batch():
        xs, hs, bs = [], [], []
        for _ in range(cfg.batch_size):
            img, boxes = sample(fields[int(rng.integers(len(fields)))], cfg.crop, rng, cfg)
            h, b = targets(boxes, grid)
            xs.append(img), hs.append(h), bs.append(b)
        return np.stack(xs).astype(np.float32), np.stack(hs), np.stack(bs)

    start, log = time.monotonic(), []
    with ThreadPoolExecutor(1) as pool:  # the next batch is made while the network trains on this one
        pending = pool.submit(batch)
        for i in range(cfg.steps):
            x, h, b = pending.result()
            pending = pool.submit(batch)
            losses = step(x, h, b)
            if i % 200 == 0 or i == cfg.steps - 1:
                f, s, o = (float(v) for v in losses)
                log.append({"step": i, "focal": f, "size": s, "offset": o})
                print(f"step {i}/{cfg.steps}: focal {f:.3f} size {s:.3f} offset {o:.3f} "
                      f"({time.monotonic() - start:.0f} s)", file=sys.stderr)
    return model, names, log


def input_shape(scale: float) -> tuple[int, int]:
    """The detector's fixed (height, width) input: a whole training field at this scale."""
    return round(FIELD_SHAPE[0] * scale), round(FIELD_SHAPE[1] * scale)


def fixed_shape(model, scale: float, channels: float = 1.0):
    """The trained network rebuilt on the app's fixed field input shape, for conversion."""
    fixed = build(*input_shape(scale), channels=channels)
    fixed.set_weights(model.get_weights())
    return fixed


def tune_threshold(detector: CellDetector, data: str | Path, names: list[str],
                   annotations: dict[str, list[Box]]) -> tuple[float, dict]:
    """The threshold whose detections best match the boxes (F1 at IoU 0.5) on these fields.

    Tuned on the int8 bundle as the app runs it (`CellDetector.raw`, then
    `decode`), so the threshold fits what ships rather than the float
    network it came from. It is the threshold for a typical red cell: the
    app's margins for large cells and cells alone (`edge_app.detect.kept_cells`)
    come on top of it and are not tuned here.
    """
    outputs = []
    for name in names:
        try:
            rgb = load_rgb(Path(data) / "images" / name)
        except ImageError as exc:
            raise ImageError(f"{name}: {exc}") from None
        outputs.append((name, *detector.raw(rgb), rgb.shape[:2]))
    table = {}
    for t in np.round(np.arange(0.15, 0.71, 0.05), 2):
        scores = []
        for name, heat, box, s, shape in outputs:
            found = decode(heat, box, float(t), s, shape)
            scores.append(score_field(annotations[name], np.array([[d.x, d.y, d.width, d.height] for d in found]).reshape(-1, 4),
                                      np.zeros(len(found), bool)))
        p = pooled(scores)
        table[float(t)] = {"recall": p.recall, "precision": p.precision, "f1": 2 * p.matched / (p.cells + p.detections)}
    best = max(table, key=lambda t: table[t]["f1"])
    return best, table


def store_threshold(path: Path, data: str | Path, names: list[str], annotations: dict[str, list[Box]]) -> tuple[float, dict]:
    """Tune a detector bundle's threshold on these annotated fields and write it, with its table, into the sidecar."""
    threshold, table = tune_threshold(CellDetector(path), data, names, annotations)
    update_sidecar(path, "threshold", threshold)
    update_sidecar(path, "tuning", {"on": f"{len(names)} annotated fields ({names[0]}-{names[-1]})", "table": table})
    return threshold, table


def field_ranges(data: str, names: list[str], annotations: dict[str, list[Box]], scale: float) -> dict:
    """Stain colour, cell size and focus ranges of the training fields (edge_app.field_check), for the sidecar."""
    from edge_app.field_check import field_stats, training_ranges
    from edge_app.smear import cells_in_boxes

    stats = []
    for name in names:
        rgb = load_rgb(Path(data) / "images" / name)
        stats.append(field_stats(rgb, cells_in_boxes(rgb, [(b.x, b.y, b.w, b.h) for b in annotations[name]]), scale))
    return training_ranges([s for s in stats if s is not None])


def representative(data: str, names: list[str], scale: float, count: int = 60, seed: int = 0, stain: str = "rgb") -> np.ndarray:
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(names), min(count, len(names)), replace=False)
    return np.stack([field_input(load_rgb(Path(data) / "images" / names[i]), *input_shape(scale), scale, stain)[0]
                     for i in sorted(pick)])


def convert(model, rep: np.ndarray, path: Path, meta: dict) -> Path:
    """Full-int8 TFLite of a fixed-input-shape network (int8 pixels in, int8 heat and boxes out) with its sidecar."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([r[None].astype(np.float32)] for r in rep)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    write_sidecar(path, meta)
    return path


def fit(cfg: DetectorConfig) -> Path:
    """Train, tune and convert; writes config.json, the Keras model, and cell-detector-int8.tflite + .json into cfg.out."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    model, names, log = train(cfg)
    model.save(out / "model.keras")
    annotations = load_annotations(Path(cfg.data) / "annotations.json")
    runs = runs_of(sorted(annotations))
    held_out = runs[cfg.test_run] if cfg.test_run is not None else []
    meta = {
        "kind": KIND,
        "name": "cell-detector-int8",
        "input": {"shape": [*input_shape(cfg.scale), 3], "dtype": "int8", "scale": cfg.scale, "stain": cfg.stain_input,
                  "function": "edge_app.detect.field_input"},
        "output": "heat (grid of P(a red cell's centre)), box (width, height, dx, dy in grid cells); grid stride 4",
        "threshold": 0.5,  # until store_threshold tunes it on the int8 bundle below
        "training": {"data": "IML-Malaria thin-smear fields (Arshad et al. 2022), hand-boxed red cells",
                     "fields": len(names), "held_out_run": cfg.test_run,
                     "held_out_fields": [held_out[0], held_out[-1]] if held_out else None,
                     "steps": cfg.steps, "final_losses": log[-1], "config": asdict(cfg)},
        "field_ranges": field_ranges(cfg.data, names, annotations, cfg.scale),
    }
    path = convert(fixed_shape(model, cfg.scale, cfg.channels), representative(cfg.data, names, cfg.scale, seed=cfg.seed, stain=cfg.stain_input),
                   out / "cell-detector-int8.tflite", meta)
    threshold, table = store_threshold(path, cfg.data, names, annotations)
    print(f"threshold {threshold} (training fields: recall {table[threshold]['recall']:.3f}, "
          f"precision {table[threshold]['precision']:.3f}); wrote {path}", file=sys.stderr)
    return path
