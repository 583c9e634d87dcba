"""PNG figures for the evaluation report (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def training_curves(history: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key in zip(axes, ("loss", "acc", "auc")):
        if key in history:
            ax.plot(history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(history[f"val_{key}"], label="validation")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend()
    _save(fig, path)


def roc_pr(y: np.ndarray, p: np.ndarray, roc_path: Path, pr_path: Path) -> None:
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (test patients)")
    _save(fig, roc_path)
    prec, rec, _ = precision_recall_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(rec, prec)
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall (test patients)")
    _save(fig, pr_path)


def confusion(m: dict, path: Path) -> None:
    grid = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(grid, cmap="Blues")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > grid.max() / 2 else "black")
    ax.set_xticks([0, 1], ["Uninfected", "Parasitized"])
    ax.set_yticks([0, 1], ["Uninfected", "Parasitized"])
    ax.set(xlabel="predicted", ylabel="true", title=f"threshold {m['threshold']:.3f}")
    _save(fig, path)


def reliability(y: np.ndarray, p_raw: np.ndarray, p_cal: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 4))
    for p, name in ((p_raw, "raw"), (p_cal, "temperature-scaled")):
        frac, mean = calibration_curve(y, p, n_bins=12, strategy="quantile")
        ax.plot(mean, frac, "o-", ms=3, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="predicted P(Parasitized)", ylabel="observed fraction", title="Reliability (test patients)")
    ax.legend()
    _save(fig, path)


def _gradcam_layer(model, kind):
    """The deepest `kind` activation with at least a 4x4 map: MobileNetV2's last one is 2x2 at 64 px, too coarse to show anything."""
    maps = [l for l in model.layers if isinstance(l, kind) and len(l.output.shape) == 4 and (l.output.shape[1] or 0) >= 4]
    return maps[-1]


def gradcam(model, x: np.ndarray) -> np.ndarray:
    """Grad-CAM heat maps (N, H, W) in [0, 1] for the Parasitized logit, for a MobileNetV2 run or the flat baseline CNN."""
    import keras
    import tensorflow as tf
    from keras import layers

    from training.model import backbone_of

    backbone = backbone_of(model)
    inp = tf.convert_to_tensor(x.astype(np.float32))
    if backbone is None:  # a flat model: its own deepest convolution (ReLU fused in)
        sub = keras.Model(model.inputs, [_gradcam_layer(model, layers.Conv2D).output, model.output])
        with tf.GradientTape() as tape:
            conv, z = sub(inp, training=False)
    else:
        layer = _gradcam_layer(backbone, layers.ReLU)
        feats = keras.Model(backbone.inputs, [layer.output, backbone.output])
        at = model.layers.index(backbone)
        pre, head = model.layers[1:at], model.layers[at + 1:]
        with tf.GradientTape() as tape:
            h = inp
            for l in pre:
                h = l(h)
            conv, pooled = feats(h)
            tape.watch(conv)
            z = pooled
            for l in head:
                z = l(z, training=False) if "dropout" in l.name else l(z)
    grads = tape.gradient(z, conv)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * conv, axis=-1))
    cam = tf.image.resize(cam[..., None], x.shape[1:3], method="bilinear")[..., 0].numpy()
    return cam / (cam.max(axis=(1, 2), keepdims=True) + 1e-8)


def gradcam_grid(model, x, y, p, threshold, path: Path, per_row: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pred = p >= threshold
    right = np.flatnonzero(pred == y.astype(bool))
    wrong = np.flatnonzero(pred != y.astype(bool))
    pick = [rng.choice(right, min(per_row, len(right)), replace=False), rng.choice(wrong, min(per_row, len(wrong)), replace=False)]
    fig, axes = plt.subplots(2, per_row, figsize=(per_row * 1.5, 3.6))
    for row, idx in enumerate(pick):
        cams = gradcam(model, x[idx]) if len(idx) else []
        for col in range(per_row):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(idx):
                i = idx[col]
                ax.imshow(x[i])
                ax.imshow(cams[col], cmap="jet", alpha=0.35)
                ax.set_title(f"{'P' if y[i] else 'U'} p={p[i]:.2f}", fontsize=7)
    _save(fig, path)
