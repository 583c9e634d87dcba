"""Keep C and C++ libraries' log lines off the terminal, and Python's own messages on it.

The TFLite runtimes ("INFO: Created TensorFlow Lite XNNPACK delegate for
CPU.") and the image decoders inside OpenCV ("libpng error: ...", libtiff's
"Using code not yet in table.") write straight to file descriptor 2, with no
switch to turn them off. A field worker should not read them, and the
decoders' reasons already reach the error rows as Python exceptions.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager
from typing import Iterator


def _fd(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration; `sys.stderr` keeps writing where fd 2 went before.

    Python's messages, warnings and tracebacks go through `sys.stderr`,
    so when it writes to fd 2 it is moved to a duplicate of the original
    descriptor for the duration; any other `sys.stderr` (a test runner's
    capture) is left as it is. Safe to nest, and a no-op where there is no
    fd 2 to redirect.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    python_stderr, original = None, sys.stderr
    if _fd(sys.stderr) == 2:
        python_stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(original, "encoding", None) or "utf-8",
                                  errors="backslashreplace")
        sys.stderr = python_stderr
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        if python_stderr is not None:
            python_stderr.flush()
            sys.stderr = original
            python_stderr.close()
        os.dup2(saved, 2)
        os.close(saved)
