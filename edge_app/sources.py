"""Where images come from: expand files and folders, then decode them off the main thread.

Every command sees the same stream of (path, pixels-or-error) in a
deterministic order, whatever the inputs were.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from edge_app.preprocess import ImageError, preprocess

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"})


@dataclass(frozen=True)
class Decoded:
    path: str
    pixels: np.ndarray | None
    error: str | None = None
    field: tuple[int, int] | None = None  # (width, height) when the image is a whole field's photograph, not a cell


#: A single-cell image is 100-200 px a side; an image at least this large on its shorter side is a microscope field.
FIELD_MIN_SIDE = 400
#: Only files this large are looked at for being a field: every field photograph is, and no single-cell image is, so
#: the NIH folders' thousands of small files cost no extra read.
FIELD_MIN_BYTES = 64 * 1024


def field_size(path: str) -> tuple[int, int] | None:
    """A file's (width, height) when it is a whole field's photograph (see FIELD_MIN_SIDE), read from its header."""
    try:
        if os.path.getsize(path) < FIELD_MIN_BYTES:
            return None
        with Image.open(path) as img:
            size = img.size
    except (OSError, ValueError):
        return None
    return size if min(size) >= FIELD_MIN_SIDE else None


def expand_paths(paths: Iterable[str | os.PathLike], recursive: bool = True,
                 on_skipped: Callable[[str, str], None] | None = None) -> list[str]:
    """Files as given, plus the image files inside folders (sorted, hidden files skipped), without repeats.

    A file named explicitly is kept whatever its suffix, so a non-image gets
    an error row instead of silently vanishing. A missing path raises
    FileNotFoundError: that is a usage error, not a bad input. A folder
    inside that cannot be listed (no permission, vanished, a link loop) is
    skipped and reported to `on_skipped(folder, reason)`: one bad folder must
    not stop a day's batch. A folder reached twice (a link to a parent, or
    to a folder already walked) is walked once.
    """
    out: list[str] = []
    seen: set[tuple[int, int] | str] = set()
    walked: set[tuple[int, int]] = set()
    report = on_skipped or (lambda folder, reason: None)

    def add(p: str, key: tuple[int, int] | str) -> None:
        if key not in seen:
            seen.add(key)
            out.append(p)

    for raw in paths:
        p = os.fspath(raw)
        if os.path.isdir(p):
            for found, key in _walk_images(p, recursive, walked, report):
                add(found, key)
        elif os.path.lexists(p):
            try:
                st = os.stat(p)
                add(p, (st.st_dev, st.st_ino))
            except OSError:  # a dangling link or unreadable entry: still gets its error row
                add(p, os.path.abspath(p))
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return out


def _walk_images(folder: str, recursive: bool, walked: set[tuple[int, int]],
                 report: Callable[[str, str], None]) -> Iterator[tuple[str, tuple[int, int]]]:
    """Image files under `folder` with their (device, inode): the same file reached twice, e.g. through a link, is one file.

    The inode of a plain entry comes free with the directory listing; only
    links are stat'ed. Resolving every path with realpath instead cost most
    of the app's start-up on a folder of a few thousand cells.
    """
    try:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in walked:
            return
        walked.add((st.st_dev, st.st_ino))
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        report(folder, exc.strerror or type(exc).__name__)
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file():
            if not e.is_symlink():
                yield os.path.join(folder, e.name), (st.st_dev, e.inode())
                continue
            try:
                target = e.stat()
            except OSError:  # gone since the listing (a watched folder): nothing to classify
                continue
            yield os.path.join(folder, e.name), (target.st_dev, target.st_ino)
    if recursive:
        for e in entries:
            if not e.name.startswith(".") and e.is_dir():
                yield from _walk_images(os.path.join(folder, e.name), recursive, walked, report)


def _decode(path: str, size: int, fit: str) -> Decoded:
    try:
        return Decoded(path, preprocess(path, size, fit), field=field_size(path))
    except ImageError as exc:
        return Decoded(path, None, str(exc))
    except Exception as exc:  # not the file's fault: a bug of ours, which must surface, with the file that hit it
        raise RuntimeError(f"internal error while decoding {path}: {type(exc).__name__}: {exc}") from exc


def decode_stream(paths: Sequence[str], size: int, fit: str, workers: int = 2, chunk: int = 8) -> Iterator[Decoded]:
    """Decode images in a small thread pool, yielding them in input order.

    OpenCV releases the GIL while inflating PNGs and resizing (Pillow too,
    for other formats), so threads overlap decoding with inference. Each task
    decodes `chunk` images, because handing one future per image between
    threads costs a noticeable share of the throughput
    (benchmarks/decode_throughput.py). The look-ahead is bounded so memory
    stays flat on folders of any size.
    """
    workers, chunk = max(1, workers), max(1, chunk)
    ahead = workers * 4
    starts = iter(range(0, len(paths), chunk))

    def task(start: int) -> list[Decoded]:
        return [_decode(p, size, fit) for p in paths[start:start + chunk]]

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[Future[list[Decoded]]] = deque(pool.submit(task, start) for start in islice(starts, ahead))
        while pending:
            done = pending.popleft().result()
            nxt = next(starts, None)
            if nxt is not None:
                pending.append(pool.submit(task, nxt))
            yield from done
