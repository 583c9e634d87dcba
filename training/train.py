"""Train one model on a patient-grouped split and save everything needed to reproduce and ship it."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.data import Split, discover, load_arrays, split_by_patient


@dataclass
class TrainConfig:
    """Defaults here are the shipped model's recipe; every run writes its own copy to config.json."""

    data: str = "../shared/datasets/malaria/cell_images"
    out: str = "runs/latest"
    arch: str = "mobilenetv2"
    image_size: int = 64
    width: float = 0.35
    fit: str = "pad"
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 8
    class_weights: bool = True
    augment: bool = True
    stain_jitter: float = 0.2  # per-cell, per-channel gain range (+-): the stain differences between patients' slides
    stain_gamma: float = 0.0  # per-cell, per-channel exponent exp(+-stain_gamma): stains laid on thinner or thicker
    seed: int = 0
    folds: int = 5
    test_fold: int = 0
    init_weights: str | None = None
    fine_tune_epochs: int = 0
    target_sensitivity: float = 0.98
    cache_dir: str | None = ".cache/malaria-edge"
    max_images: int | None = None  # for smoke runs: a seeded subset of the training patients' cells
    extra_cells: str | None = None  # an NIH-style folder of more training cells (e.g. cut from real fields)
    extra_infected_repeat: int = 1  # how often each extra infected cell is shown an epoch (they are rare)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        saved = json.loads(Path(path).read_text())
        saved.setdefault("stain_jitter", 0.0)  # runs saved before the options existed had none
        saved.setdefault("stain_gamma", 0.0)
        return cls(**saved)


def restain(x, stain_jitter: float, stain_gamma: float):
    """Recolour a batch of cells (floats in 0-1) as if each had been stained on its own slide (see `augmenter`)."""
    import tensorflow as tf

    per_cell_channel = [tf.shape(x)[0], 1, 1, 3]
    if stain_gamma:
        x = x ** tf.exp(tf.random.uniform(per_cell_channel, -stain_gamma, stain_gamma))
    if stain_jitter:
        x = x * tf.random.uniform(per_cell_channel, 1.0 - stain_jitter, 1.0 + stain_jitter)
    return x


def augmenter(seed: int, stain_jitter: float = 0.0, stain_gamma: float = 0.0):
    """Microscopy-safe augmentation: any orientation, small shifts/zoom, stain colour jitter; black fill like the background.

    Patients' slides differ most in stain: the mean colour of a patient's
    cells varies by 8-10 % per channel (one standard deviation) across the
    NIH donors, and the worst outliers sit 3 deviations out. `stain_jitter`
    scales each channel of each cell by its own factor in 1 +- stain_jitter,
    which moves the colour as a different staining would; being a gain, it
    leaves the black background black. `stain_gamma` raises each channel to
    its own power in exp(+-stain_gamma): with white light as the reference
    that scales the channel's optical density, as a thinner or thicker stain
    (or a longer staining) would, darkening or paling chromatin and
    cytoplasm by different amounts where a gain moves them alike.
    """
    import keras
    import tensorflow as tf
    from keras import layers

    geometric = keras.Sequential([
        layers.RandomFlip("horizontal_and_vertical", seed=seed),
        layers.RandomTranslation(0.06, 0.06, fill_mode="constant", seed=seed),
        layers.RandomZoom(0.1, fill_mode="constant", seed=seed),
    ])

    def apply(x, y):
        x = geometric(x, training=True)
        x = tf.image.rot90(x, k=tf.random.uniform([], 0, 4, dtype=tf.int32))
        x = restain(x / 255.0, stain_jitter, stain_gamma)
        x = tf.image.random_brightness(x, 0.08)
        x = tf.image.random_contrast(x, 0.85, 1.15)
        x = tf.image.random_saturation(x, 0.8, 1.2)
        x = tf.image.random_hue(x, 0.03)
        return tf.clip_by_value(x, 0.0, 1.0) * 255.0, y

    return apply


def datasets(x_train, y_train, x_val, y_val, cfg: TrainConfig):
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices((x_train, y_train.astype("float32")))
    train = train.shuffle(len(x_train), seed=cfg.seed, reshuffle_each_iteration=True)
    train = train.batch(cfg.batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.augment:
        train = train.map(augmenter(cfg.seed, cfg.stain_jitter, cfg.stain_gamma), num_parallel_calls=tf.data.AUTOTUNE)
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val.astype("float32"))).batch(256)
    val = val.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE)


def epoch_logger(total: int):
    """One line per epoch on stderr: the engineer sees progress without Keras's carriage-return bars."""
    import keras

    started: dict[int, float] = {}

    def end(epoch: int, logs: dict | None) -> None:
        shown = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if isinstance(v, float))
        print(f"epoch {epoch + 1}/{total} {time.perf_counter() - started[epoch]:.0f}s {shown}", file=sys.stderr, flush=True)

    return keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: started.__setitem__(epoch, time.perf_counter()),
                                          on_epoch_end=end)


def compile_model(model, cfg: TrainConfig, steps: int, epochs: int, learning_rate: float):
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate / 10, decay_steps=max(1, steps * epochs), warmup_target=learning_rate, warmup_steps=steps,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(name="acc", threshold=0.0), keras.metrics.AUC(name="auc", from_logits=True)],
    )


def add_extra_cells(x: np.ndarray, y: np.ndarray, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The training cells with the extra folder's appended (its infected ones repeated), never in validation or test.

    Cells cut from real microscope fields teach the model other stains,
    cameras and species than the NIH slides'; they stay out of the NIH
    validation and test patients so the NIH figures stay comparable.
    """
    extra = load_arrays(discover(cfg.extra_cells, patient_of=lambda name: "extra"), cfg.image_size, cfg.fit, None)
    repeat = np.where(extra.y == 1, cfg.extra_infected_repeat, 1)
    print(f"extra cells from {cfg.extra_cells}: {int((extra.y == 1).sum())} infected (x{cfg.extra_infected_repeat}), "
          f"{int((extra.y == 0).sum())} healthy", file=sys.stderr, flush=True)
    return np.concatenate([x, np.repeat(extra.x, repeat, axis=0)]), np.concatenate([y, np.repeat(extra.y, repeat)])


def fit(cfg: TrainConfig, split: Split | None = None) -> dict:
    """Train per `cfg`; writes model.keras (and checkpoint.keras while training), history.json, split.json,
    config.json and bad_files.txt to cfg.out."""
    import keras
    import tensorflow as tf

    from training.model import backbone_of, build_model

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    samples = discover(cfg.data)
    split = split or split_by_patient(samples, cfg.seed, cfg.folds, cfg.test_fold)
    arrays = load_arrays(samples, cfg.image_size, cfg.fit, cfg.cache_dir)
    x_tr, y_tr = arrays.subset(split.train)
    x_va, y_va = arrays.subset(split.val)
    if cfg.max_images and len(x_tr) > cfg.max_images:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(x_tr), cfg.max_images, replace=False))
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if cfg.extra_cells:
        x_tr, y_tr = add_extra_cells(x_tr, y_tr, cfg)
    print(f"patients: train {len(split.train)}, val {len(split.val)}, test {len(split.test)}; "
          f"cells: train {len(x_tr)}, val {len(x_va)}", file=sys.stderr, flush=True)
    (out / "bad_files.txt").write_text("".join(f"{p}\t{r}\n" for p, r in arrays.bad))
    if arrays.bad:
        print(f"warning: {len(arrays.bad)} unreadable images skipped (listed in {out / 'bad_files.txt'})", file=sys.stderr)
    (out / "split.json").write_text(json.dumps({"seed": cfg.seed, "folds": cfg.folds, "test_fold": cfg.test_fold, **split.to_json()}, indent=1))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    train_ds, val_ds = datasets(x_tr, y_tr, x_va, y_va, cfg)
    steps = int(np.ceil(len(x_tr) / cfg.batch_size))
    weights = None
    if cfg.class_weights:
        pos = float(y_tr.mean())
        weights = {0: 0.5 / (1 - pos), 1: 0.5 / pos}
    model = build_model(cfg.arch, cfg.image_size, cfg.width, cfg.init_weights)
    callbacks = [
        keras.callbacks.EarlyStopping("val_auc", mode="max", patience=cfg.patience, restore_best_weights=True),
        # the best model so far survives a killed or crashed run
        keras.callbacks.ModelCheckpoint(out / "checkpoint.keras", monitor="val_auc", mode="max", save_best_only=True),
        epoch_logger(cfg.epochs + cfg.fine_tune_epochs),
    ]
    history: dict[str, list[float]] = {}
    phases = [(cfg.epochs, cfg.learning_rate)]
    backbone = backbone_of(model)
    if cfg.init_weights and backbone is not None and cfg.fine_tune_epochs:
        backbone.trainable = False  # phase 1: train the head on frozen pretrained features
        phases = [(cfg.epochs, cfg.learning_rate), (cfg.fine_tune_epochs, cfg.learning_rate / 10)]
    start = time.perf_counter()
    for i, (epochs, lr) in enumerate(phases):
        if i == 1:
            backbone.trainable = True
        compile_model(model, cfg, steps, epochs, lr)
        h = model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=weights, callbacks=callbacks, verbose=0)
        for k, v in h.history.items():
            history.setdefault(k, []).extend(float(x) for x in v)
    seconds = time.perf_counter() - start
    model.save(out / "model.keras")
    (out / "history.json").write_text(json.dumps({"seconds": seconds, **history}, indent=1))
    print(f"trained in {seconds:.0f} s; saved {out / 'model.keras'}", file=sys.stderr)
    tf.keras.backend.clear_session()
    return {"seconds": seconds, "model": str(out / "model.keras"), "bad_files": len(arrays.bad)}
