"""Score a TFLite bundle the way the app runs it (edge_app.model), on labelled pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_app.model import ModelBundle
from training import metrics as M


def bundle_probabilities(path: str | Path, x: np.ndarray, batch: int = 256, threads: int = 2) -> tuple[np.ndarray, float]:
    """P(Parasitized) from the bundle for every row of x, and the bundle's threshold."""
    model = ModelBundle(path, threads=threads)
    p = np.concatenate([model.predict(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else np.zeros(0)
    return p, model.threshold


def score_bundle(path: str | Path, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p, threshold = bundle_probabilities(path, x)
    return M.summary(y, p, threshold)
