"""The README's and the guides' commands, run as written, in a fresh copy of the repository beside the shared data.

Every ```bash block of README.md, then of each guide (GUIDES), is run in
order, each with `bash -euo pipefail` from the copy's root, and must exit
0. A block the tests cannot run (hours of training, a server, the Pi's
camera, or the test command itself) is preceded by a line
`<!-- not run by tests/test_readme.py: REASON -->`, so skipping one is a
visible decision in the page, never a silent one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO

SHARED = REPO.parent / "shared" / "datasets"
#: The pages whose commands are run, in this order (the README's first: it installs the app the guides use).
GUIDES = ["README.md", "docs/field-worker.md", "docs/microscopist.md", "docs/lab-staff.md", "docs/retraining.md",
          "docs/how-it-works.md", "deploy/README.md"]
SKIP = re.compile(r"<!-- not run by tests/test_readme\.py: (.+?) -->")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def readme_blocks(text: str) -> list[tuple[str, str | None]]:
    """(bash source, reason it is not run or None) for each ```bash block, in order."""
    blocks = []
    for m in BLOCK.finditer(text):
        if m.group(1) != "bash":
            continue
        before = text[:m.start()].rstrip().splitlines()
        skip = SKIP.fullmatch(before[-1].strip()) if before else None
        blocks.append((m.group(2), skip.group(1) if skip else None))
    return blocks


def test_blocks_are_found_and_every_skip_gives_a_reason():
    blocks = [b for page in GUIDES for b in readme_blocks((REPO / page).read_text())]
    assert len([b for b in blocks if b[1] is None]) >= 5
    assert all(reason.strip() for _, reason in blocks if reason is not None)
    linked = set(re.findall(r"\]\(((?:docs|deploy)/[\w./-]+\.md)", (REPO / "README.md").read_text()))
    assert linked == set(GUIDES[1:]), linked  # every guide the README links to has its commands run, and no other
    assert readme_blocks("<!-- not run by tests/test_readme.py: slow -->\n```bash\necho a\n```\n```bash\necho b\n```\n") == [
        ("echo a\n", "slow"), ("echo b\n", None)]


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED / "malaria").is_dir() or not (SHARED / "iml_malaria").is_dir(),
                    reason="the README's examples need ../shared/datasets")
def test_every_readme_command_runs_as_written(tmp_path):
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    repo = tmp_path / "malaria-edge"
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    (tmp_path / "shared").symlink_to(SHARED.parent, target_is_directory=True)
    for git in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(["git", *git], cwd=repo, check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALARIA_EDGE", "VIRTUAL_ENV", "PYTHON", "XDG_"))}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    env["HOME"] = str(tmp_path / "home")  # a new user's: the demo slides go to its register, never the real user's
    ran = 0
    for page in GUIDES:
        for source, reason in readme_blocks((repo / page).read_text()):
            if reason is not None:
                continue
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", source], cwd=repo, env=env, capture_output=True,
                                  text=True, timeout=900)
            assert done.returncode == 0, f"{page} block failed:\n{source}\n--- stderr ---\n{done.stderr[-3000:]}"
            assert "Traceback" not in done.stderr and "INFO: Created TensorFlow Lite" not in done.stderr, done.stderr[-3000:]
            ran += 1
    assert ran >= 5
    assert "Sample DEMO-1" in (repo / "demo" / "slide" / "report.html").read_text()
    assert (repo / "demo" / "day.csv").stat().st_size > 0 and "sample" in (repo / "demo" / "slides.csv").read_text()
    assert len(list((repo / "demo" / "capture" / "fields").iterdir())) == 3
    untracked = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo, capture_output=True,
                               text=True, check=True).stdout
    assert not untracked.strip(), untracked  # the commands leave nothing git would offer to commit


def test_every_test_the_readme_names_exists():
    """The guides back their reliability promises with named tests: a renamed or deleted test must not leave them lying."""
    named = [m for page in GUIDES for m in re.findall(r"`(tests/test_\w+\.py)::(\w+)`", (REPO / page).read_text())]
    assert len(named) >= 10
    for path, name in named:
        assert re.search(rf"^def {name}\(", (REPO / path).read_text(), re.M), f"{path}::{name} is named in the README"
