"""A model bundle: a ``.tflite`` file and its ``.json`` sidecar, checked before use.

The sidecar carries everything needed to use the model correctly (labels,
input spec, preprocessing, threshold, calibration) so nothing has to be
remembered, and the tflite's sha256 so a swapped, truncated or tampered file
is refused instead of silently giving wrong answers in the field.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edge_app import __version__
from edge_app.labels import LABELS
from edge_app.parasitemia import CountingErrors
from edge_app.preprocess import FIT_METHODS, RESIZE_METHOD
from edge_app.runtime import Runtime, RuntimeMissing, find_runtime

FORMAT = "malaria-edge-model/1"
DEFAULT_MODEL_NAME = "malaria-edge-int8.tflite"
#: The sidecar block of the review threshold (quantization.counting): the cells a microscopist is shown, at or above
#: it, and the sensitivity there, which is what a reviewed count is corrected for.
REVIEW_BLOCK = "review"
_INPUT_DTYPES = {"uint8": np.uint8, "int8": np.int8, "float32": np.float32}


class ModelError(RuntimeError):
    """The model cannot be used; the message says which file and what to do."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(tflite: str | Path) -> Path:
    return Path(tflite).with_suffix(".json")


def write_sidecar(tflite: str | Path, meta: dict[str, Any]) -> Path:
    """Write the sidecar for a tflite file, stamping the format and the file's sha256."""
    out = sidecar_path(tflite)
    data = {"format": FORMAT, **meta, "tflite_sha256": sha256_file(tflite)}
    out.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return out


def update_sidecar(tflite: str | Path, key: str, block: Any) -> None:
    """Set (or, for None, remove) one top-level block of an existing sidecar: measurements added after conversion."""
    side = sidecar_path(tflite)
    meta = json.loads(side.read_text())
    if block is None:
        meta.pop(key, None)
    else:
        meta[key] = block
    side.write_text(json.dumps(meta, indent=2) + "\n")


def shipped_path(name: str, env_var: str) -> Path:
    """A shipped bundle: $env_var, else the installed package data (malaria_edge_models: the repo's models/ folder)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    try:
        return Path(str(resources.files("malaria_edge_models") / name))
    except ModuleNotFoundError:  # not installed, run from elsewhere: the checkout beside this file
        return Path(__file__).resolve().parent.parent / "models" / name


def default_model_path() -> Path:
    """The shipped cell classifier ($MALARIA_EDGE_MODEL overrides it)."""
    return shipped_path(DEFAULT_MODEL_NAME, "MALARIA_EDGE_MODEL")


@dataclass(frozen=True)
class InputSpec:
    size: int
    dtype: str


@dataclass(frozen=True)
class Counting:
    """A threshold for cells on a smear and the error rates measured there: counting's (sidecar "counting"), or the
    review's (sidecar "review": every cell at or above it is shown to the microscopist)."""

    threshold: float
    errors: CountingErrors
    #: Review only: the cells shown whatever their score when its sensitivity was measured (edge_app.review): those
    #: whose box is at least this many times their field's median (None: none), and the white cells set apart.
    enlarged_area: float | None = None
    white_cells: bool = False


class ModelBundle:
    """A verified model ready to predict P(Parasitized) for batches of uint8 RGB pixels."""

    def __init__(self, tflite: str | Path, threads: int = 1, runtime: Runtime | None = None):
        self.path = Path(tflite)
        self.meta = _read_sidecar(self.path)
        self.input = InputSpec(int(self.meta["input"]["size"]), str(self.meta["input"]["dtype"]))
        self.fit = str(self.meta["preprocessing"]["fit"])
        #: The model's own version (the sidecar's "version"): which training run made it, for results to name.
        self.version = str(self.meta.get("version", "unversioned"))
        self.threshold = float(self.meta["threshold"])
        self.temperature = float(self.meta.get("temperature", 1.0))
        c = self.meta.get("counting")
        self.counting = Counting(float(c["threshold"]), counting_errors(c)) if c else None
        r = self.meta.get(REVIEW_BLOCK)
        self.review = Counting(float(r["threshold"]), counting_errors(r),
                               float(r["enlarged_area"]) if r.get("enlarged_area") is not None else None,
                               bool(r.get("white_cells", False))) if r and c else None
        stain = self.meta.get("stain")
        #: Median RGB of the training cells: each field's stain is matched to it (edge_app.stain); None for older models.
        self.cell_colour = tuple(float(v) for v in stain["cell_colour"]) if stain else None
        try:
            self.runtime = runtime or find_runtime()
        except RuntimeMissing as exc:
            raise ModelError(str(exc)) from None
        try:
            self._interp = self.runtime.interpreter(str(self.path), threads)
        except Exception as exc:  # the runtimes raise ValueError/RuntimeError with long texts
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path}: not a usable TFLite model ({first})") from None
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self._check_signature()
        self._batch = int(self._in["shape"][0])

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.stem))

    def provenance(self, threshold: float) -> dict[str, Any]:
        """What a result made with this model at `threshold` records about its maker (results files, a slide's summary)."""
        return {"app": f"malaria-edge {__version__}", "model": self.name, "model_version": self.version,
                "model_sha256": self.meta["tflite_sha256"], "threshold": threshold}

    def _check_signature(self) -> None:
        shape = list(self._in["shape"])
        want = [self.input.size, self.input.size, 3]
        if len(shape) != 4 or shape[1:] != want:
            raise ModelError(f"{self.path}: input shape {shape} does not match the sidecar's {want}: wrong sidecar for this model")
        actual = np.dtype(self._in["dtype"]).name
        if actual != self.input.dtype:
            raise ModelError(f"{self.path}: input dtype {actual} does not match the sidecar's {self.input.dtype}")
        if list(self._out["shape"])[1:] != [1]:
            raise ModelError(f"{self.path}: expected one output (the logit of Parasitized), got shape {list(self._out['shape'])}")

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Raw logits for a (N, size, size, 3) uint8 batch."""
        if pixels.ndim != 4 or pixels.shape[1:] != (self.input.size, self.input.size, 3):
            raise ValueError(f"expected (N, {self.input.size}, {self.input.size}, 3) pixels, got {pixels.shape}")
        n = pixels.shape[0]
        if n == 0:
            return np.zeros((0,), np.float32)
        if n != self._batch:
            self._interp.resize_tensor_input(self._in["index"], [n, self.input.size, self.input.size, 3])
            self._interp.allocate_tensors()
            self._batch = n
        self._interp.set_tensor(self._in["index"], quantize_input(pixels, self._in))
        self._interp.invoke()
        raw = self._interp.get_tensor(self._out["index"]).reshape(n)
        scale, zero = self._out["quantization"]
        if scale:
            return (raw.astype(np.float32) - zero) * scale
        return raw.astype(np.float32)

    def predict(self, pixels: np.ndarray, views: int = 1) -> np.ndarray:
        """Calibrated P(Parasitized) for a batch: sigmoid(mean logit over the first `views` of VIEWS / temperature).

        One view is the cells as seen; 2 adds their mirror images; 8 every
        quarter turn of both. A cell's orientation says nothing about
        infection, so the mean cancels part of the noise a single view's
        pixels carry: worth it on field cells, which differ more from the
        training cells than single-cell images. Each view is one inference
        more per cell.
        """
        return self.probability(self.mean_logit(pixels, range(views)))

    def mean_logit(self, pixels: np.ndarray, views: range) -> np.ndarray:
        """The mean logit over these VIEWS of each cell (a range, so that a caller can add views it has not yet run)."""
        if not views or views.start < 0 or views.stop > len(VIEWS):
            raise ValueError(f"views must lie within 0-{len(VIEWS)}, got {views}")
        return np.mean([self.logits(np.ascontiguousarray(VIEWS[v](pixels))) for v in views], axis=0)

    def probability(self, logit: np.ndarray) -> np.ndarray:
        """Calibrated P(Parasitized) of a logit: sigmoid(logit / temperature)."""
        z = np.asarray(logit, np.float32) / self.temperature
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))).astype(np.float64)


#: The square's 8 symmetries, as views of a (N, size, size, 3) batch: as seen, mirrored (left-right), then each
#: quarter turn of both. The first two are what every field cell is classified with (edge_app.smear.classify_cells).
VIEWS = tuple(lambda px, k=k, m=m: np.rot90(px[:, :, ::-1] if m else px, k, axes=(1, 2)) for k in range(4) for m in (False, True))


def quantize_input(pixels: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Map uint8 pixels to the tensor's dtype; for int8/uint8 models exact when scale is 1."""
    dtype = detail["dtype"]
    if dtype == np.float32:
        return pixels.astype(np.float32)
    scale, zero = detail["quantization"]
    if scale == 1.0:
        q = pixels.astype(np.int16) + int(zero)
    else:
        q = np.round(pixels.astype(np.float32) / scale + zero)
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def read_sidecar(tflite: str | Path, how_to_choose: str = "pass --model, or set MALARIA_EDGE_MODEL") -> dict[str, Any]:
    """A bundle's sidecar, checked for what every kind of bundle shares: present, readable, our format, the tflite's hash."""
    tflite = Path(tflite)
    if not tflite.is_file():
        raise ModelError(f"model file not found: {tflite} ({how_to_choose})")
    side = sidecar_path(tflite)
    if not side.is_file():
        raise ModelError(f"{tflite}: its sidecar {side.name} is missing; a model is a .tflite with its .json beside it")
    try:
        meta = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{side}: unreadable sidecar ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{side}: not a malaria-edge sidecar (format must be {FORMAT!r})")
    actual = sha256_file(tflite)
    if actual != meta.get("tflite_sha256"):
        raise ModelError(
            f"{tflite}: sha256 {actual[:12]}... does not match its sidecar ({str(meta.get('tflite_sha256'))[:12]}...): "
            "the model file is corrupt or was modified; reinstall the model"
        )
    return meta


def counting_errors(block: dict[str, Any]) -> CountingErrors:
    """The error rates of a sidecar's "counting" block, with the cell counts and between-run spread behind them when it has them."""
    counts = [block.get(k) for k in ("infected_cells", "healthy_cells")]
    spread = [block.get(k) for k in ("sensitivity_sd", "false_positive_rate_sd")]
    return CountingErrors(float(block["sensitivity"]), float(block["false_positive_rate"]),
                          *(None if v is None else int(v) for v in counts), *(None if v is None else float(v) for v in spread))


def _read_sidecar(tflite: Path) -> dict[str, Any]:
    meta = read_sidecar(tflite)
    side = sidecar_path(tflite)
    if meta.get("kind", "cell-classifier") != "cell-classifier":
        raise ModelError(f"{side}: a {meta.get('kind')} bundle, not a cell classifier: pass the classifier's .tflite")
    try:
        size = int(meta["input"]["size"])
        dtype = meta["input"]["dtype"]
        fit = meta["preprocessing"]["fit"]
        threshold = float(meta["threshold"])
        labels = tuple(meta["labels"])
        temperature = float(meta.get("temperature", 1.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{side}: sidecar is missing or has a bad field ({exc})") from None
    problems = []
    if size < 8:
        problems.append(f"input size {size}")
    if dtype not in _INPUT_DTYPES:
        problems.append(f"input dtype {dtype!r}")
    if fit not in FIT_METHODS:
        problems.append(f"preprocessing fit {fit!r}")
    resize = meta["preprocessing"].get("resize") if isinstance(meta["preprocessing"], dict) else None
    if resize != RESIZE_METHOD:
        problems.append(f"preprocessing resize {resize or 'not recorded (an older model, trained on Pillow-resized cells)'}: "
                        f"this app resizes by {RESIZE_METHOD}; retrain the model (malaria-train fit, then malaria-quantize convert)")
    if not 0.0 <= threshold <= 1.0:
        problems.append(f"threshold {threshold}")
    if not temperature > 0:
        problems.append(f"temperature {temperature}")
    if labels != LABELS:
        problems.append(f"labels {list(labels)} (expected {list(LABELS)})")
    for key in ("counting", REVIEW_BLOCK):
        if meta.get(key) is not None:
            try:
                c = meta[key]
                counting_errors(c)
                if not 0.0 <= float(c["threshold"]) <= 1.0:
                    raise ValueError(f"threshold {c['threshold']}")
                if key == REVIEW_BLOCK:
                    if meta.get("counting") and float(c["threshold"]) > float(meta["counting"]["threshold"]):
                        raise ValueError(f"threshold {c['threshold']} above the counting one: a review must show every cell counted")
                    if c.get("enlarged_area") is not None and not float(c["enlarged_area"]) > 1.0:
                        raise ValueError(f"enlarged_area {c['enlarged_area']}: a cell is enlarged only above its field's median")
                    if not isinstance(c.get("white_cells", False), bool):
                        raise ValueError(f"white_cells {c['white_cells']!r}")
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(f"{key} block ({exc})")
    if meta.get("stain") is not None:
        try:
            colour = [float(v) for v in meta["stain"]["cell_colour"]]
            if len(colour) != 3 or not all(1.0 <= v <= 255.0 for v in colour):
                raise ValueError(f"cell_colour {colour}")
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"stain block ({exc})")
    if problems:
        raise ModelError(f"{side}: invalid sidecar: {', '.join(problems)}")
    return meta
