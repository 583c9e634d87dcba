"""Find a TFLite interpreter without TensorFlow.

ai-edge-litert is Google's maintained runtime with wheels for today's Pi OS;
tflite-runtime is its predecessor and still what some images have.
TensorFlow itself is deliberately not a fallback: the app must run on a Pi
that cannot install it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from edge_app.native_log import native_stderr_silenced

_CANDIDATES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
)


class RuntimeMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Runtime:
    name: str
    interpreter_class: Any

    @property
    def version(self) -> str:
        # importlib.metadata costs ~50 ms to import: only `info` pays it, not every classify start.
        from importlib import metadata

        try:
            return metadata.version(self.name)
        except metadata.PackageNotFoundError:
            return "unknown"

    def interpreter(self, model_path: str, threads: int) -> Any:
        """An interpreter with its tensors allocated, made without the runtime's C++ log lines on the terminal."""
        with native_stderr_silenced():
            interp = self.interpreter_class(model_path=model_path, num_threads=threads)
            interp.allocate_tensors()
        return interp


def find_runtime() -> Runtime:
    """The first TFLite runtime that imports, or RuntimeMissing with how to install one."""
    for module, dist in _CANDIDATES:
        try:
            mod = import_module(module)
        except ImportError:
            continue
        return Runtime(dist, mod.Interpreter)
    raise RuntimeMissing(
        "no TFLite runtime found: install one with 'pip install ai-edge-litert' "
        "(or 'pip install tflite-runtime' where ai-edge-litert has no wheel)"
    )
