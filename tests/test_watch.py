import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from edge_app.model import ModelBundle
from edge_app.results import ResultWriter, read_rows
from edge_app.watch import SettleTracker, watch
from tests.conftest import BLUE, RED, REPO, cell


def _wait_for_rows(path: Path, n: int, timeout: float = 30) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            rows = read_rows(str(path), "csv")
            if len(rows) >= n:
                return rows
        time.sleep(0.05)
    raise AssertionError(f"expected {n} rows in {path}, got {len(read_rows(str(path), 'csv')) if path.exists() else 0}")


def _drop(folder: Path, names: list[str]) -> None:
    """Write each image under a temporary name and rename it in, as a camera or a careful copy does."""
    for name in names:
        tmp = folder / f".{name}.part"
        cell(RED if "red" in name else BLUE, seed=len(name)).save(tmp, format="PNG")
        os.replace(tmp, folder / name)


def test_files_dropped_while_running_are_classified_once(tiny_model, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "r.csv"
    inbox.mkdir()
    stop = threading.Event()
    writer = ResultWriter(str(out), "csv", resume=True)
    worker = threading.Thread(target=watch, args=(str(inbox), ModelBundle(tiny_model), writer, stop, 0.05, 0.1, 4, 1))
    worker.start()
    try:
        _drop(inbox, ["red_a.png", "blue_a.png"])
        _wait_for_rows(out, 2)
        _drop(inbox, ["red_b.png"])
        (inbox / "sub").mkdir()
        _drop(inbox / "sub", ["blue_b.png"])
        rows = _wait_for_rows(out, 4)
        time.sleep(0.4)  # several more polls: nothing may be classified twice
    finally:
        stop.set()
        worker.join(10)
        writer.close()
    rows = read_rows(str(out), "csv")
    assert sorted(Path(r["path"]).name for r in rows) == ["blue_a.png", "blue_b.png", "red_a.png", "red_b.png"]
    assert all(r["label"] == ("Parasitized" if "red" in r["path"] else "Uninfected") for r in rows)


def test_a_file_still_growing_waits_until_it_settles(tmp_path):
    f = tmp_path / "x.png"
    f.write_bytes(b"12")
    tracker = SettleTracker(settle=1.0)
    assert tracker.ready([str(f)], now=0.0) == []
    f.write_bytes(b"1234")  # still being copied
    assert tracker.ready([str(f)], now=1.5) == []
    assert tracker.ready([str(f)], now=2.0) == []
    assert tracker.ready([str(f)], now=2.6) == [str(f)]


def test_exactly_once_across_a_restart(tiny_model, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "r.csv"
    inbox.mkdir()
    cmd = [sys.executable, "-m", "edge_app.cli", "watch", str(inbox), "--model", str(tiny_model), "-o", str(out),
           "--interval", "0.05", "--settle", "0.1", "--threads", "1", "--batch-size", "2"]
    _drop(inbox, [f"red_{i}.png" for i in range(3)])
    first = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=REPO)
    _wait_for_rows(out, 3)
    first.send_signal(signal.SIGKILL)  # a crash or power cut, not a clean stop
    first.wait()
    _drop(inbox, [f"blue_{i}.png" for i in range(3)])  # arrive while the service is down
    second = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=REPO)
    _wait_for_rows(out, 6)
    _drop(inbox, ["red_late.png"])
    _wait_for_rows(out, 7)
    second.send_signal(signal.SIGTERM)  # systemd's stop
    _, err = second.communicate(timeout=20)
    assert second.returncode == 0, err
    assert "3 already there" in err and "stopped; this session" in err
    names = [Path(r["path"]).name for r in read_rows(str(out), "csv")]
    assert len(names) == len(set(names)) == 7


def test_a_file_that_failed_and_then_changed_is_read_again(tiny_model, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "r.csv"
    inbox.mkdir()
    (inbox / "red_x.png").write_bytes(b"\x89PNG\r\n\x1a\n half of a copy")  # stable, so read, and an error
    stop = threading.Event()
    writer = ResultWriter(str(out), "csv", resume=True)
    worker = threading.Thread(target=watch, args=(str(inbox), ModelBundle(tiny_model), writer, stop, 0.05, 0.1, 4, 1))
    worker.start()
    try:
        assert _wait_for_rows(out, 1)[0]["status"] == "error"
        cell(RED, seed=1).save(inbox / ".red_x.part", format="PNG")
        os.replace(inbox / ".red_x.part", inbox / "red_x.png")  # the copy completes
        rows = _wait_for_rows(out, 2)
        time.sleep(0.4)  # more polls: an unchanged file is not read a third time
    finally:
        stop.set()
        worker.join(10)
        writer.close()
    rows = read_rows(str(out), "csv")
    assert [r["status"] for r in rows] == ["error", "ok"] and rows[1]["label"] == "Parasitized"


def test_a_corrupt_file_is_retried_a_bounded_number_of_times(tmp_path):
    from edge_app.watch import MAX_RETRIES, FailedFiles

    f = tmp_path / "bad.png"
    f.write_bytes(b"x")
    failed = FailedFiles()
    failed.failed(str(f))
    retried = 0
    for i in range(MAX_RETRIES + 3):
        f.write_bytes(b"x" * (i + 2))  # it keeps changing, and keeps failing
        if failed.changed():
            retried += 1
            failed.failed(str(f))
    assert retried == MAX_RETRIES
