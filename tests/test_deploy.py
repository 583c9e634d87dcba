import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNIT = REPO / "deploy" / "raspberry-pi" / "malaria-edge-watch.service"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_watch_unit_passes_systemd_verification(tmp_path):
    """systemd's own parser checks the unit; the Pi's paths are pointed at this machine's install to do so."""
    app = Path(sys.executable).parent / "malaria-edge"
    if not app.exists():
        pytest.skip("malaria-edge console script not installed in this environment")
    text = UNIT.read_text().replace("/opt/malaria-edge/bin/malaria-edge", str(app))
    unit = tmp_path / "malaria-edge-watch.service"
    unit.write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_watch_unit_is_sandboxed():
    """systemd's own exposure score (0 = fully locked down, 10 = not at all), stated in deploy/README.md."""
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    score = float(res.stdout.rsplit("Overall exposure level for malaria-edge-watch.service:", 1)[1].split()[0])
    assert score <= 1.0, res.stdout
    assert f"exposure score {score}" in (REPO / "deploy" / "README.md").read_text()
    text = UNIT.read_text()
    for line in ("User=malaria-edge", "PrivateNetwork=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "UMask=0077", "MemoryMax="):
        assert line in text


def test_watch_unit_runs_the_watch_command_and_restarts():
    text = UNIT.read_text()
    assert "malaria-edge watch " in text and "Restart=on-failure" in text
