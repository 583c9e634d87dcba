"""The tests never touch the user's own slide register: they run on the device where the README says to run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import USER_DATA, USER_DATA_BEFORE, USER_HOME, user_data_snapshot


def test_a_command_started_by_a_test_writes_into_the_test_home_not_the_users(tmp_path, tiny_model):
    """A command started the way the README test starts them (no MALARIA_EDGE_REGISTER) registers its slide in the test
    session's own home; the user's data folder is unchanged (and is checked again when the whole run ends)."""
    from tests.conftest import drawn_slide

    assert Path(os.environ["HOME"]) != USER_HOME
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALARIA_EDGE")}
    slide = drawn_slide(tmp_path, tiny_model, 1)
    res = subprocess.run([sys.executable, "-m", "edge_app.cli", "slides", "rebuild", str(slide)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    register = Path(os.environ["XDG_DATA_HOME"]) / "malaria-edge" / "register.sqlite3"
    assert register.is_file() and USER_DATA not in register.parents
    assert user_data_snapshot() == USER_DATA_BEFORE
