"""Find NIH-style cell images, split them by patient and decode them once.

Cells of one patient share stain and smear, so a split by cell leaks: every
split here is by patient. Decoding goes through ``edge_app.preprocess`` (the
app's own function), and decoded arrays are cached so epochs and reruns do
not decode PNGs again.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from edge_app.labels import LABELS
from edge_app.preprocess import ImageError, preprocess
from edge_app.sources import IMAGE_SUFFIXES

# C33P1thinF..., C47P8thinOriginalOlympusCX21..., C51AP12thinF..., C6NThinF...,
# C231ThinF...: the slide letter (A/B) and a trailing N belong to the id; the
# microscope/stain suffix after it does not.
_PATIENT_RE = re.compile(r"^(C\d+[AB]?(?:P\d+)?N?)")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # index into LABELS: 1 = Parasitized
    patient: str


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def to_json(self) -> dict:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def patient_id(filename: str) -> str:
    """The donor a cell came from, from the NIH file-name convention."""
    match = _PATIENT_RE.match(filename)
    if not match:
        raise ValueError(f"cannot read a patient id from {filename!r} (expected a name like C33P1thinF_..._cell_1.png)")
    return match.group(1)


def discover(root: str | Path, patient_of: Callable[[str], str] = patient_id) -> list[Sample]:
    """List the images of an NIH-style folder (Parasitized/, Uninfected/), sorted, skipping non-images.

    `patient_of` reads the donor from a file name (the NIH convention by default).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    samples = []
    for label, name in enumerate(LABELS):
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{root} has no {name}/ folder: expected the NIH layout with Parasitized/ and Uninfected/")
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(path, label, patient_of(path.name)))
    if not samples:
        raise ValueError(f"no images found under {root}")
    return samples


def patient_folds(samples: Sequence[Sample], k: int, seed: int) -> list[list[str]]:
    """Deal patients into k folds, stratified so healthy-only donors and infected patients land in every fold.

    Within each stratum patients are shuffled by the seed and dealt to the
    fold that currently holds the fewest cells, so folds have similar sizes
    even though patients contribute very different numbers of cells.
    """
    cells: dict[str, int] = {}
    infected: dict[str, bool] = {}
    for s in samples:
        cells[s.patient] = cells.get(s.patient, 0) + 1
        infected[s.patient] = infected.get(s.patient, False) or s.label == 1
    if len(cells) < k:
        raise ValueError(f"{len(cells)} patients cannot fill {k} folds")
    rng = random.Random(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for stratum in (True, False):
        patients = sorted(p for p in cells if infected[p] == stratum)
        rng.shuffle(patients)
        patients.sort(key=lambda p: -cells[p])  # biggest first: greedy balancing works best
        for p in patients:
            i = min(range(k), key=lambda j: (sizes[j], len(folds[j])))
            folds[i].append(p)
            sizes[i] += cells[p]
    return [sorted(f) for f in folds]


def split_by_patient(samples: Sequence[Sample], seed: int = 0, folds: int = 5, test_fold: int = 0) -> Split:
    """Train/validation/test by patient: one of `folds` folds is the test set, one more the validation set."""
    if not 0 <= test_fold < folds:
        raise ValueError(f"test_fold must be in 0..{folds - 1}")
    dealt = patient_folds(samples, folds, seed)
    val_fold = (test_fold + 1) % folds
    train = [p for i, f in enumerate(dealt) if i not in (test_fold, val_fold) for p in f]
    return Split(tuple(sorted(train)), tuple(dealt[val_fold]), tuple(dealt[test_fold]))


def _decode(args: tuple[str, int, str]) -> np.ndarray | str:
    path, size, fit = args
    try:
        return preprocess(path, size, fit)
    except ImageError as exc:
        return str(exc)


@dataclass(frozen=True)
class Arrays:
    """Decoded cells: pixels, labels and patient ids aligned row by row; files that failed are in `bad`."""

    x: np.ndarray
    y: np.ndarray
    patient: np.ndarray
    bad: tuple[tuple[str, str], ...]

    def subset(self, patients: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        m = np.isin(self.patient, list(patients))
        return self.x[m], self.y[m]


def load_arrays(
    samples: Sequence[Sample],
    size: int,
    fit: str = "pad",
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> Arrays:
    """Decode samples to (N, size, size, 3) uint8 pixels; bad files are reported in the result, not raised.

    With `cache_dir`, the arrays are stored under a key made of the file list,
    sizes, modification times and preprocessing, so a changed dataset or
    preprocessing never reuses a stale cache.
    """
    cache = _cache_path(samples, size, fit, cache_dir) if cache_dir else None
    if cache and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            bad = tuple((p, r) for p, r in json.loads(str(z["bad"])))
            return Arrays(z["x"], z["y"], z["patient"], bad)
    jobs = [(str(s.path), size, fit) for s in samples]
    images: list[np.ndarray] = []
    kept: list[Sample] = []
    bad: list[tuple[str, str]] = []
    # Spawned, not forked: a fork copies the parent's threads' state (TensorFlow's, an interpreter's
    # XNNPACK pool) into the workers, where freeing it can crash them (seen once in CI).
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for i, (s, out) in enumerate(zip(samples, pool.map(_decode, jobs, chunksize=64))):
            if isinstance(out, str):
                bad.append((str(s.path), out))
            else:
                images.append(out)
                kept.append(s)
            if (i + 1) % 2000 == 0:
                print(f"  decoded {i + 1}/{len(samples)} images", file=sys.stderr, flush=True)
    arrays = Arrays(
        np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        np.asarray([s.label for s in kept], dtype=np.int64),
        np.asarray([s.patient for s in kept], dtype=str),
        tuple(bad),
    )
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, x=arrays.x, y=arrays.y, patient=arrays.patient, bad=json.dumps(bad))
        tmp.replace(cache)
    return arrays


def _cache_path(samples: Sequence[Sample], size: int, fit: str, cache_dir: str | Path) -> Path:
    h = hashlib.sha256(f"v3 {size} {fit}\n".encode())
    for s in samples:
        st = s.path.stat()
        h.update(f"{s.path}\t{s.label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return Path(cache_dir) / f"cells-{size}-{fit}-{h.hexdigest()[:16]}.npz"
