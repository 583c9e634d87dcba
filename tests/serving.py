"""`malaria-edge serve` in its own process, as the browser test, benchmarks/serve.py and scripts/screenshots.py start it."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(command: list[str], *args: str, port: int | None = None, env: dict | None = None,
                timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """Start `command serve` (command: how to run malaria-edge) on 127.0.0.1:port (a free one by default) and
    return once /slides answers; the caller stops the process."""
    port = port or free_port()
    proc = subprocess.Popen([*command, "serve", "--port", str(port), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/slides", timeout=2):
                return proc, url
        except urllib.error.HTTPError:  # it answers (asking for a token): started
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"serve did not start: {proc.stdout.read()}") from None
            time.sleep(0.02)
