"""`malaria-edge serve` tested as an attacker and a crash would test it: each reproduction of issue #35, on loopback,
against the real server (waitress, in its own process) where the server's own behaviour matters, through Flask's test
client where only the app's does."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_app.cli import main
from edge_app.register import connect, decisions, get_slide, rebuild
from edge_app.review import read_decisions, record_decision
from edge_app.slide import read_summary, slide_review
from edge_app.web import create_app
from edge_app.web_guard import HostCheck, same_site_path
from tests.conftest import drawn_slide
from tests.serving import free_port, start_serve

TOKEN = "correct-horse-battery"
#: The service unit's MemoryMax (deploy/raspberry-pi/malaria-edge-serve@.service).
UNIT_MEMORY = 400 * 1024 * 1024


def _serve(*args: str, env_token: str | None = None, port: int | None = None):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if env_token:
        env["MALARIA_EDGE_TOKEN"] = env_token
    return start_serve([sys.executable, "-m", "edge_app.cli"], *args, port=port, env=env)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def _status_kb(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


class Browser:
    """A cookie-keeping HTTP client from one loopback address (127.0.0.x): what one phone on the hotspot is."""

    def __init__(self, url: str, source: str = "127.0.0.1"):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.source = parts.hostname, parts.port, source
        self.cookie = ""

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout, source_address=(self.source, 0))
        try:
            hdrs = {"Accept": "text/html", **({"Cookie": self.cookie} if self.cookie else {}), **(headers or {})}
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            cookie = resp.getheader("Set-Cookie")
            if cookie:
                self.cookie = cookie.split(";", 1)[0]
            return resp.status, dict(resp.getheaders()), data
        finally:
            conn.close()

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post_form(self, path: str, fields: dict, files: list[tuple[str, bytes]] = (), **kw):
        boundary = "----malaria-edge-test"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
        parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
                  f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body=body,
                            headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **kw.pop("headers", {})}, **kw)

    def sign_in(self, token: str = TOKEN) -> None:
        status, _, page = self.get("/login")
        status, headers, _ = self.post_form("/login", {"csrf_token": _csrf(page.decode()), "token": token, "next": "/slides"})
        assert status == 302, status


def _field_jpeg(megapixels: float, seed: int = 0) -> bytes:
    """A phone's photo of a field: drawn cells, enlarged to `megapixels`, as a JPEG (a few MB: smooth, so it packs)."""
    from benchmarks.synthetic_fields import compose_field, drawn_cell

    rng = np.random.default_rng(seed)
    field, _ = compose_field([(drawn_cell(rng, i % 9 == 0), "") for i in range(60)], (480, 640), rng)
    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    buf = io.BytesIO()
    Image.fromarray(field).resize((w, w * 3 // 4), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _png(size: tuple[int, int], colour=(200, 150, 170)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG", optimize=True)
    return buf.getvalue()


# 1. Memory: uploads stay within the unit's MemoryMax, and the memory is given back.

def test_uploads_stay_within_the_service_memory_limit_and_memory_is_given_back(tmp_path):
    """Reproduces: one 24-megapixel photo, two 16 MP at once, three 12 MP at once, a 131 KB single-colour 6300x6300
    PNG, four 65535x610 PNGs as fields. The server's peak resident memory (VmHWM, what the kernel's limit counts
    besides the page cache) stays under the unit's 400 MB with room to spare, and falls back after."""
    proc, url = _serve("--threads", "2")
    try:
        browser = Browser(url)
        _, _, page = browser.get("/classify")
        token = _csrf(page.decode())

        def upload(files, kind="field"):
            status, _, body = browser.post_form("/classify", {"csrf_token": token, "kind": kind}, files, timeout=300)
            return status, body.decode()

        status, body = upload([("warm.jpg", _field_jpeg(1.2))])  # load the models: the baseline is a server in use
        assert status == 200 and "cells called Parasitized" in body
        baseline = _status_kb(proc.pid, "VmRSS")
        status, body = upload([("phone.jpg", _field_jpeg(24))])
        assert status == 200 and re.search(r"phone\.jpg: \d+ of \d+ cells called Parasitized", body), body[-2000:]
        for n, mp in ((2, 16), (3, 12)):
            results = []
            threads = [threading.Thread(target=lambda i=i: results.append(upload([(f"p{i}.jpg", _field_jpeg(mp, i))])))
                       for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert [s for s, _ in results] == [200] * n
        status, body = upload([("flat.png", _png((6300, 6300)))])
        assert status == 200 and "flat.png: image too large to decode here" in body
        status, body = upload([(f"strip{i}.png", _png((65535, 610))) for i in range(4)])
        assert status == 200 and body.count("image too large to decode here") == 4
        peak = _status_kb(proc.pid, "VmHWM") * 1024
        after = _status_kb(proc.pid, "VmRSS")
        assert peak < 0.8 * UNIT_MEMORY, f"peak {peak / 2**20:.0f} MB"
        assert after * 1024 < peak and after * 1024 < 0.8 * UNIT_MEMORY, (baseline, peak, after)
    finally:
        _stop(proc)


def test_memory_freed_after_an_upload_is_handed_back_to_the_system():
    """glibc keeps the blocks a large decode freed for reuse, so a server that decoded a phone photo would stay at its
    peak resident size for good; after each upload the server hands them back (edge_app.web._give_back_memory).
    Measured in this process: 150 MB of heap blocks (as image decoding and numpy leave behind) freed, then handed
    back: the process is back to its size before them."""
    from edge_app.web import _give_back_memory

    def rss() -> int:
        return _status_kb(os.getpid(), "VmRSS")

    _give_back_memory()
    before = rss()
    blocks, keep = [], []
    for _ in range(2400):  # under glibc's mmap threshold: from the heap, each followed by a block that stays alive,
        blocks.append(bytearray(64 * 1024))  # as in a real heap, so that freeing them cannot shrink it from the top
        keep.append(bytearray(1024))
    grown = rss()
    del blocks
    held = rss()
    _give_back_memory()
    given = rss()
    # Back to where it started (freeing alone gives back anything from a quarter to none of it, by the process's history).
    assert grown - before > 120_000 and given - before < 20_000 and given <= held, (before, grown, held, given)
    assert len(keep) == 2400


# 2. Open redirect.

@pytest.mark.parametrize("target", ["/%09/127.0.0.2:9999/phish", "/%0a/x", "//evil.example/", "/\\evil.example",
                                    "https://evil.example/", "/%0d%0aSet-Cookie:x=1", "/ /x"])
def test_next_never_leads_off_the_site(tiny_model, target):
    client = create_app(model=str(tiny_model), token=TOKEN).test_client()
    form = client.get("/login").get_data(as_text=True)
    resp = client.post("/login", data={"csrf_token": _csrf(form), "token": TOKEN, "next": urllib.parse.unquote(target)})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    resp = client.post("/reviewer", data={"csrf_token": _csrf(form), "reviewer": "A", "next": urllib.parse.unquote(target)})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    assert client.get(f"/login?next={target}").status_code == 200


def test_same_site_paths_are_kept():
    assert same_site_path("/slides/abc?q=P-7#x".split("#")[0]) == "/slides/abc?q=P-7"
    assert same_site_path("/") == "/" and same_site_path(None) == "/"


# 3. Slow guesses block no one; guessing is slowed per client, and logged.

def test_wrong_tokens_make_their_client_wait_without_holding_a_server_thread(tmp_path):
    """Reproduces: 40 parallel wrong guesses from one device made a right request from another take 9 s. Now the
    guesser is refused at once (429) after its first miss, and the reviewer's request is answered meanwhile."""
    proc, url = _serve("--host", "127.0.0.1", env_token=TOKEN)
    try:
        guesser, reviewer = Browser(url, "127.0.0.2"), Browser(url, "127.0.0.1")
        reviewer.sign_in()
        statuses: list[int] = []

        def guess(i: int) -> None:
            statuses.append(guesser.get("/slides", headers={"Authorization": f"Bearer wrong-{i:06d}",
                                                             "Accept": "application/json"})[0])

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        start = time.monotonic()
        status, _, _ = reviewer.get("/slides")
        took = time.monotonic() - start
        for t in threads:
            t.join()
        assert status == 200 and took < 2.0, took
        assert statuses.count(429) >= 35 and set(statuses) <= {401, 429}  # only the first few were checked at all
        status, headers, _ = guesser.get("/slides", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 429 and "Retry-After" in headers  # the right token is not checked while it must wait
    finally:
        out = _stop(proc)
    assert "wrong access token from 127.0.0.2" in out


def test_a_short_token_or_one_on_the_command_line_is_refused(tmp_path):
    res = CliRunner().invoke(main, ["serve", "--token", "0123456789abcdef"])
    assert res.exit_code == 2 and "shows in `ps`" in res.output
    res = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"], env={"MALARIA_EDGE_TOKEN": "123456"})
    assert res.exit_code == 2 and "at least 8 characters" in res.output
    short = tmp_path / "token"
    short.write_text("1234\n")
    res = CliRunner().invoke(main, ["serve", "--token-file", str(short)])
    assert res.exit_code == 2 and "at least 8 characters" in res.output


def test_the_token_is_read_from_a_file_and_never_shows_in_ps(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    proc, url = _serve("--host", "127.0.0.1", "--token-file", str(path))
    try:
        args = open(f"/proc/{proc.pid}/cmdline", "rb").read().decode()
        assert TOKEN not in args
        browser = Browser(url)
        assert browser.get("/slides", headers={"Accept": "application/json"})[0] == 401
        browser.sign_in()
        assert browser.get("/slides")[0] == 200
    finally:
        _stop(proc)


# 4. Connections and request bodies.

def test_idle_connections_lock_no_one_out_and_a_huge_body_is_refused_before_it_is_read(tmp_path):
    proc, url = _serve()
    port = urllib.parse.urlsplit(url).port
    idle = []
    try:
        for _ in range(150):
            s = socket.create_connection(("127.0.0.1", port))
            idle.append(s)
        start = time.monotonic()
        status, _, _ = Browser(url).get("/slides", timeout=30)
        assert status == 200 and time.monotonic() - start < 5
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                  f"Content-Length: {2**30}\r\n\r\n".encode() + b"x" * 65536)
        answer = s.recv(200).decode(errors="replace")
        s.close()
        assert answer.startswith("HTTP/1.1 413"), answer  # answered with 64 KiB of the 1 GiB sent: none of it spooled
    finally:
        for s in idle:
            s.close()
        _stop(proc)


def test_too_many_upload_parts_say_so_not_too_many_megabytes(tiny_model):
    client = create_app(model=str(tiny_model)).test_client()
    page = client.get("/classify").get_data(as_text=True)
    files = [(io.BytesIO(b"x"), f"{i}.png") for i in range(1001)]
    resp = client.post("/classify", data={"csrf_token": _csrf(page), "images": files}, content_type="multipart/form-data")
    assert resp.status_code == 413 and b"Too many files at once" in resp.data and b"MB" not in resp.data


# 5. A slide folder moved or swapped is never shown under the other slide's name.

def _two_slides(tmp_path, tiny_model):
    p = drawn_slide(tmp_path, tiny_model, 1, "--sample", "PATIENT-P", name="p")
    q = drawn_slide(tmp_path, tiny_model, 1, "--sample", "PATIENT-Q", name="q")
    return p, q, read_summary(p)["id"], read_summary(q)["id"]


def test_swapped_slide_folders_are_refused_not_shown_under_the_other_name(tmp_path, tiny_model, private_register):
    p, q, pid, qid = _two_slides(tmp_path, tiny_model)
    tmp = tmp_path / "swap"
    p.rename(tmp)
    q.rename(p)
    tmp.rename(q)
    client = create_app(model=str(tiny_model), reviewer="Dr K").test_client()
    page = client.get(f"/slides/{pid}")
    assert page.status_code == 409 and b"slides rebuild" in page.data and b"PATIENT-Q" not in page.data
    assert client.get(f"/slides/{pid}/fields/0.jpg").status_code == 409
    form = client.get("/slides").get_data(as_text=True)
    resp = client.post(f"/slides/{pid}/review", data={"csrf_token": _csrf(form), "cell": "0:0", "decision": "reject"})
    assert resp.status_code == 409
    assert not (p / "review.jsonl").exists() and not (q / "review.jsonl").exists()
    assert get_slide(connect(private_register), pid) is not None  # P's row is still there
    rebuild(connect(private_register), [tmp_path])
    assert get_slide(connect(private_register), pid)["folder"] == str(q.resolve())
    assert client.get(f"/slides/{pid}").status_code == 200


# 6. Crash consistency: review.jsonl, summary.json and the register agree after a crash.

def _agree(folder, register) -> None:
    conn = connect(register)
    summary = read_summary(folder)
    review = slide_review(folder, summary).as_dict()
    made = {k: d.decision for k, d in read_decisions(folder).items()}
    row = get_slide(conn, summary["id"])
    assert {d["cell"]: d["decision"] for d in decisions(conn, summary["id"])} == made
    assert row["review_decided"] == review["decided"] == summary["review"]["decided"]
    assert row["status"] == review["status"] == summary["review"]["status"]
    assert row["last_decision"] == summary["review"]["last_decision"] == review["last_decision"]


def test_a_decision_written_before_a_crash_is_reconciled_at_start_up_and_by_rebuild(tmp_path, tiny_model, private_register):
    slide = drawn_slide(tmp_path, tiny_model, 1)
    review = slide_review(slide, read_summary(slide))
    for c in review.cells[:5]:
        record_decision(slide, c, "reject", "Dr K")  # as if killed before the summary and the register heard of it
    stale = read_summary(slide)
    assert stale["review"]["decided"] == 0
    rebuild(connect(private_register), [tmp_path])  # the folders are the record: rebuild reads review.jsonl
    row = get_slide(connect(private_register), stale["id"])
    assert row["review_decided"] == 5 and len(decisions(connect(private_register), stale["id"])) == 5
    for c in review.cells[5:8]:
        record_decision(slide, c, "confirm", "Dr K")
    proc, url = _serve()
    _stop(proc)
    _agree(slide, private_register)
    assert read_summary(slide)["review"]["decided"] == 8


def test_kill_9_during_reviews_leaves_nothing_to_disagree_after_a_restart(tmp_path, tiny_model, private_register):
    """Reproduces: after kill -9 during reviews, the register held another decision for a cell than review.jsonl.
    Five rounds: two reviewers post decisions as fast as they can, the server is killed mid-way, and restarted."""
    slide = drawn_slide(tmp_path, tiny_model, 2)
    sid = read_summary(slide)["id"]
    keys = [c.key for c in slide_review(slide, read_summary(slide)).cells]
    port = free_port()
    for round_ in range(5):
        proc, url = _serve("--reviewer", "Dr K", port=port)
        stop = threading.Event()

        def post(offset: int) -> None:
            browser = Browser(url)
            _, _, page = browser.get(f"/slides/{sid}")
            token = _csrf(page.decode())
            i = offset
            while not stop.is_set():
                try:
                    browser.post_form(f"/slides/{sid}/review", {"csrf_token": token, "cell": keys[i % len(keys)],
                                                                "decision": "confirm" if (i + round_) % 2 else "reject"},
                                      headers={"Accept": "application/json"}, timeout=5)
                except OSError:
                    return
                i += 7

        workers = [threading.Thread(target=post, args=(k,)) for k in range(2)]
        for w in workers:
            w.start()
        time.sleep(0.6 + 0.2 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for w in workers:
            w.join()
    proc, url = _serve(port=port)
    _stop(proc)
    _agree(slide, private_register)


# 7. DNS rebinding.

def test_requests_naming_another_host_are_refused(slide_with_register, tiny_model):
    client = create_app(model=str(tiny_model)).test_client()
    assert client.get("/export.csv", headers={"Host": "attacker.test"}).status_code == 400
    assert client.get("/export.csv", headers={"Host": "attacker.test:8080"}).status_code == 400
    resp = client.get("/export.csv", headers={"Host": "127.0.0.1:8080"})
    assert resp.status_code == 200 and b"P-7" in resp.data
    assert client.get("/slides", headers={"Host": "localhost:8080"}).status_code == 200


def test_host_check_on_every_address_allows_address_literals_and_the_device_names():
    wildcard = HostCheck("0.0.0.0", device_names=("raspberrypi", "raspberrypi.local"))
    assert wildcard.allows("192.168.4.1:8080") and wildcard.allows("raspberrypi.local:8080") and wildcard.allows("[::1]:8080")
    assert not wildcard.allows("attacker.test:8080") and not wildcard.allows("")
    one = HostCheck("192.168.4.1", device_names=())
    assert one.allows("192.168.4.1") and not one.allows("10.0.0.9")
    loop = HostCheck("127.0.0.1", device_names=("raspberrypi",))
    assert loop.allows("localhost") and not loop.allows("raspberrypi") and not loop.allows("192.168.4.1")


@pytest.fixture
def slide_with_register(tmp_path, tiny_model):
    return drawn_slide(tmp_path, tiny_model, 1, "--sample", "P-7")


# 8. The smaller ones.

def test_symlinks_inside_a_slide_folder_are_not_followed(tmp_path, tiny_model):
    slide = drawn_slide(tmp_path, tiny_model, 1)
    sid = read_summary(slide)["id"]
    outside = tmp_path / "outside.jsonl"
    outside.write_text("")
    (slide / "review.jsonl").symlink_to(outside)
    client = create_app(model=str(tiny_model), reviewer="Dr K").test_client()
    page = client.get(f"/slides/{sid}")
    assert page.status_code == 410  # its decisions cannot be read: the folder is damaged, not quietly another file
    form = client.get("/slides").get_data(as_text=True)
    resp = client.post(f"/slides/{sid}/review", data={"csrf_token": _csrf(form), "cell": "0:0", "decision": "reject"})
    assert resp.status_code == 410 and outside.read_text() == ""
    (slide / "review.jsonl").unlink()
    annotated = next((slide / "annotated").glob("*.png"))
    secret = tmp_path / "secret.png"
    shutil.move(annotated, secret)
    annotated.symlink_to(secret)
    assert client.get(f"/slides/{sid}").status_code == 200
    assert client.get(f"/slides/{sid}/fields/0.jpg").status_code == 404


def test_bad_urls_are_4xx_never_500(slide_with_register, tiny_model):
    sid = read_summary(slide_with_register)["id"]
    client = create_app(model=str(tiny_model), token=TOKEN).test_client()
    assert client.get("/nope", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    assert client.get(f"/nope?token={TOKEN}").status_code == 404
    signed = create_app(model=str(tiny_model)).test_client()
    for url in (f"/slides/{sid}/cells/0/%C2%B2.jpg", f"/slides/{sid}/cells/0/w%C2%B2.jpg", "/login?next=/%0a/x",
                f"/slides/{sid}/cells/0/%EF%BC%91.jpg", "/slides/%00", f"/slides/{sid}/review"):
        assert signed.get(url).status_code < 500, url


def test_escape_sequences_in_sample_names_never_reach_the_terminal(tmp_path, tiny_model):
    drawn_slide(tmp_path, tiny_model, 1, "--sample", "P\x1b]0;pwned\x07\x1b[2J-1", "--operator", "Op\x9b31m")
    listing = CliRunner().invoke(main, ["slides", "list"])
    sid = json.loads((tmp_path / "slide" / "summary.json").read_text())["id"]
    shown = CliRunner().invoke(main, ["slides", "show", sid])
    for res in (listing, shown):
        assert res.exit_code == 0 and "\x1b" not in res.output and "\x07" not in res.output and "\x9b" not in res.output
    assert "P?]0;pwned??[2J-1" in shown.output and "Op?31m" in shown.output


def test_a_cell_another_reviewer_changed_meanwhile_is_a_conflict(slide_with_register, tiny_model):
    sid = read_summary(slide_with_register)["id"]
    app = create_app(model=str(tiny_model))
    a, b = app.test_client(), app.test_client()
    pages = []
    for client, name in ((a, "Dr A"), (b, "Dr B")):
        page = client.get(f"/slides/{sid}").get_data(as_text=True)
        client.post("/reviewer", data={"csrf_token": _csrf(page), "reviewer": name, "next": "/"})
        pages.append(client.get(f"/slides/{sid}").get_data(as_text=True))
    key = re.findall(r'data-cell="([^"]+)"', pages[0])[0]
    seen = re.search(rf'name="cell" value="{key}">\s*<input type="hidden" name="seen" value="([^"]*)"', pages[0]).group(1)
    first = a.post(f"/slides/{sid}/review", data={"csrf_token": _csrf(pages[0]), "cell": key, "decision": "confirm",
                                                   "seen": seen}, headers={"Accept": "application/json"})
    assert first.status_code == 200
    clash = b.post(f"/slides/{sid}/review", data={"csrf_token": _csrf(pages[1]), "cell": key, "decision": "reject",
                                                   "seen": seen})
    assert clash.status_code == 409 and b"Dr A confirmed this cell" in clash.data
    assert read_decisions(slide_with_register)[key].decision == "confirm"
    again = a.post(f"/slides/{sid}/review", data={"csrf_token": _csrf(pages[0]), "cell": key, "decision": "reject",
                                                   "seen": first.get_json()["seen"]})
    assert again.status_code == 302  # the reviewer who made it may change their own decision


def test_patient_images_are_not_cached(slide_with_register, tiny_model):
    sid = read_summary(slide_with_register)["id"]
    client = create_app(model=str(tiny_model)).test_client()
    for url in (f"/slides/{sid}/fields/0.jpg", f"/slides/{sid}/cells/0/0.jpg", f"/slides/{sid}"):
        assert client.get(url).headers["Cache-Control"] == "no-store", url


def test_sign_out_and_session_expiry(slide_with_register, tiny_model):
    from tests.test_web import Clock

    clock = Clock()
    app = create_app(model=str(tiny_model), token=TOKEN, clock=clock)
    client = app.test_client()
    assert client.get(f"/slides?token={TOKEN}").status_code == 302
    page = client.get("/slides").get_data(as_text=True)
    assert "Sign out" in page
    cookie = client.get_cookie("session").value
    assert client.post("/logout", data={"csrf_token": _csrf(page)}).status_code == 302
    assert client.get("/slides", headers={"Accept": "application/json"}).status_code == 401
    kept = app.test_client()
    kept.set_cookie("session", cookie)  # a copy of the cookie kept from before the sign-out
    assert kept.get("/slides", headers={"Accept": "application/json"}).status_code == 401
    fresh = app.test_client()
    assert fresh.get(f"/slides?token={TOKEN}").status_code == 302
    clock.now += 11 * 3600
    assert fresh.get("/slides").status_code == 200
    clock.now += 2 * 3600  # past SESSION_HOURS since signing in
    assert fresh.get("/slides", headers={"Accept": "application/json"}).status_code == 401
