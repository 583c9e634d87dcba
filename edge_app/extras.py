"""The training and quantization commands on a machine with only the app installed: one line that says what is missing.

`pip install .` installs every console script, `malaria-train` and
`malaria-quantize` included, but not the `train` extra they need; on a Pi
they would end in an ImportError traceback. Their entry points check first.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from typing import Callable

#: What the `train` extra provides, by import name.
TRAIN_MODULES = ("tensorflow", "sklearn", "scipy", "matplotlib")


def missing_train_modules() -> list[str]:
    """The train extra's modules that cannot be imported here (found without importing them: TensorFlow takes seconds)."""
    return [m for m in TRAIN_MODULES if find_spec(m) is None]


def needs_train_extra(command: str, main: Callable[[], object]) -> Callable[[], None]:
    """An entry point that runs `main`, or exits 2 with the install hint when the train extra is missing."""

    def run() -> None:
        missing = missing_train_modules()
        if missing:
            print(f"{command} needs the training extra, missing here: {', '.join(missing)}. Install it with "
                  "`pip install 'malaria-edge[train]'`, or train on another machine and copy the model "
                  "(the Raspberry Pi runs only `malaria-edge`).", file=sys.stderr)
            sys.exit(2)
        main()

    return run
