"""What `serve` checks of a request before any page sees it: which Host it answers to, where it may send a browser
next, and how a client guessing the access token is slowed down without holding one of the server's threads.

The review app is for a trusted hotspot or the device itself, not the
internet (deploy/README.md says what it guarantees and what it does not);
these checks close what a page on another site, or a phone on the same
hotspot, could otherwise do:

- DNS rebinding: a page on another site whose name is made to point at the
  device would be same-origin with it; requests naming any other host than
  the device are refused (`HostCheck`).
- Open redirect: a sign-in link's `next` may only lead to a path on this
  site (`same_site_path`), however a browser would read it.
- Token guessing: each wrong token doubles how long its client must wait
  before trying again (`Backoff`); the wait is an immediate refusal, never a
  sleep, so guesses cost the server nothing and block nobody else.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections import OrderedDict
from typing import Callable

#: An access token shorter than this is refused at start-up: with `Backoff` a guesser gets a few hundred tries a
#: day per address, but a hotspot has many addresses.
MIN_TOKEN_LENGTH = 8
#: The first wrong token costs its client this many seconds, each further one twice the last, up to BACKOFF_MAX.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 15 * 60.0
#: Clients remembered at most (the oldest forgotten first): memory stays bounded whoever knocks.
BACKOFF_CLIENTS = 4096

_SAFE_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")


def same_site_path(target: str | None) -> str:
    """`target` if it is a path on this site, else "/".

    Browsers drop tabs and newlines from a URL and read a backslash as a
    slash, so "/\\t/host" or "/\\\\host" leads off the site as "//host" does:
    only printable URL characters are allowed, and never a second slash or
    backslash after the first.
    """
    return target if target and _SAFE_PATH.fullmatch(target) else "/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HostCheck:
    """Which names a request's Host header may give, from what the server listens on.

    On the device itself (a loopback address) only loopback names; on one
    address, that address and the device's own names; on every address
    (0.0.0.0, ::), any address literal and the device's own names
    (`socket.gethostname()`, with ".local" for mDNS). A name an attacker's
    DNS can point at the device is none of these.
    """

    def __init__(self, listen: str, device_names: tuple[str, ...] | None = None):
        names = device_names if device_names is not None else self.device_names()
        self.any_address = listen in ("0.0.0.0", "::", "")
        self.names = {"localhost", "127.0.0.1", "::1"}
        if not is_loopback(listen):
            self.names |= {listen.lower(), *(n.lower() for n in names)}

    @staticmethod
    def device_names() -> tuple[str, ...]:
        name = socket.gethostname().lower()
        return (name, f"{name}.local") if name else ()

    def allows(self, host_header: str) -> bool:
        """Whether a Host header ("name", "name:port", "[v6]:port") names this device."""
        host = host_header.strip().lower()
        if host.startswith("["):
            host = host[1:host.find("]")] if "]" in host else ""
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        if not host:
            return False
        if host in self.names or is_loopback(host):
            return True
        return self.any_address and _is_ip(host)


class Backoff:
    """Wrong tokens per client: after the n-th in a row the client is refused for BACKOFF_FIRST * 2**(n-1) seconds
    (at most BACKOFF_MAX), whatever it sends, the right token included, so no guess is ever checked early."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, tuple[int, float]] = OrderedDict()  # failures in a row, refused until

    def wait(self, client: str) -> float:
        """Seconds before this client may try a token again (0: now)."""
        with self._lock:
            _, until = self._clients.get(client, (0, 0.0))
        return max(0.0, until - self.clock())

    def failed(self, client: str) -> tuple[int, float]:
        """Record a wrong token; returns how many in a row and the seconds the client must now wait."""
        with self._lock:
            count = self._clients.pop(client, (0, 0.0))[0] + 1
            wait = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (count - 1))
            self._clients[client] = (count, self.clock() + wait)
            while len(self._clients) > BACKOFF_CLIENTS:
                self._clients.popitem(last=False)
        return count, wait

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)


class SignedOut:
    """Sessions signed out on this server (their random ids), the newest BACKOFF_CLIENTS kept: a copy of a signed-out
    browser's cookie is refused, as is any session once SESSION_HOURS have passed (edge_app.web)."""

    def __init__(self):
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, sid: str) -> None:
        with self._lock:
            self._ids[sid] = None
            while len(self._ids) > BACKOFF_CLIENTS:
                self._ids.popitem(last=False)

    def __contains__(self, sid: object) -> bool:
        with self._lock:
            return sid in self._ids
