"""`malaria-train` and `malaria-quantize` where only the app is installed: one line that says what to install."""

from __future__ import annotations

import pytest

from edge_app import extras


def test_a_missing_train_extra_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(extras, "find_spec", lambda name: None if name in ("tensorflow", "sklearn") else object())
    called = []
    run = extras.needs_train_extra("malaria-train", lambda: called.append(True))
    with pytest.raises(SystemExit) as stop:
        run()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and not called
    assert err.count("\n") == 1 and "missing here: tensorflow, sklearn" in err and "pip install 'malaria-edge[train]'" in err


def test_with_the_extra_the_command_runs(monkeypatch):
    monkeypatch.setattr(extras, "find_spec", lambda name: object())
    called = []
    extras.needs_train_extra("malaria-quantize", lambda: called.append(True))()
    assert called == [True]


@pytest.mark.parametrize("module", ["training.cli", "quantization.cli"])
def test_the_command_modules_import_without_the_train_extra(module):
    """Their entry points say what to install only if importing the module itself needs none of the extra."""
    import subprocess
    import sys

    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in extras.TRAIN_MODULES)
    res = subprocess.run([sys.executable, "-c", f"import sys; {blocked}; import {module}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
