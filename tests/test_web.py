"""`malaria-edge serve`'s routes through Flask's test client, the refused requests included."""

from __future__ import annotations

import io
import json
import re
import socket

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_app.cli import main
from edge_app.register import connect, get_slide
from edge_app.slide import read_summary
from edge_app.web import create_app, is_loopback
from tests.conftest import BLUE, RED, cell, drawn_slide


@pytest.fixture
def slide(tmp_path, tiny_model):
    return drawn_slide(tmp_path, tiny_model, 2, "--sample", "P-7", "--operator", "Ana")


@pytest.fixture
def no_network(monkeypatch):
    """Any outbound connection the app tries fails the test."""
    def refuse(self, address):
        raise AssertionError(f"the app tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _client(tiny_model, **kw):
    app = create_app(model=str(tiny_model), **kw)
    return app.test_client()


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _cells(html: str) -> list[str]:
    return re.findall(r'data-cell="([^"]+)"', html)


def test_every_page_offline_with_its_security_headers(slide, tiny_model, no_network):
    client = _client(tiny_model, reviewer="Dr K")
    sid = read_summary(slide)["id"]
    for url in ("/slides", f"/slides/{sid}", "/classify", "/export", "/static/app.css", "/static/app.js"):
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        body = resp.get_data(as_text=True)
        assert not re.search(r'(src|href)="(https?:)?//', body), url  # nothing from elsewhere
    assert client.get("/").headers["Location"].endswith("/slides")
    listing = client.get("/slides").get_data(as_text=True)
    assert "P-7" in listing and "counted: awaits review" in listing and "8 flagged of 48 cells" in listing


def test_the_slide_page_shows_counts_fields_and_the_review_grid(slide, tiny_model, no_network):
    client = _client(tiny_model)
    sid = read_summary(slide)["id"]
    page = client.get(f"/slides/{sid}").get_data(as_text=True)
    assert "16.67 %" in page and "not reviewed yet" in page and "Enter your name" in page
    cells = _cells(page)
    assert len(cells) == 8 + 12
    field = client.get(f"/slides/{sid}/fields/1.jpg")
    assert field.status_code == 200 and Image.open(io.BytesIO(field.data)).size == (560, 400)
    fno, cno = cells[0].split(":")
    crop = client.get(f"/slides/{sid}/cells/{fno}/{cno}.jpg")
    img = Image.open(io.BytesIO(crop.data))
    assert crop.mimetype == "image/jpeg" and min(img.size) >= 192
    r, _, b = np.asarray(img.convert("RGB"), float).mean(axis=(0, 1))
    assert r > b  # the first flagged cell is a red one


def test_cells_near_the_threshold_are_shown_as_such(tmp_path, model_copy, no_network):
    side = model_copy.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["counting"] = {"threshold": 0.5, "sensitivity": 0.8, "false_positive_rate": 0.01}
    meta["review"] = {"threshold": 0.0, "sensitivity": 0.96, "false_positive_rate": 0.2}
    side.write_text(json.dumps(meta))
    out = drawn_slide(tmp_path, model_copy)
    page = _client(model_copy).get(f"/slides/{read_summary(out)['id']}").get_data(as_text=True)
    assert "Flagged (8): the app counts these as infected" in page and "Borderline (40): not counted" in page
    assert "Spot checks" not in page  # every other cell is borderline here: none left to sample
    assert len(_cells(page)) == 48 and page.count("Borderline: app&#39;s score") == 40
    assert page.count(">Parasite</button>") == 48 and "under the 0.50 it counts from" in page
    scores = [float(v) for v in re.findall(r"app&#39;s score (0\.\d+)", page)]
    assert scores[:8] == sorted(scores[:8], reverse=True) and scores[8:] == sorted(scores[8:], reverse=True)
    # The cell under review is framed in blue, so it stands out from its neighbours' green boxes.
    fno, cno = _cells(page)[-1].split(":")
    crop = np.asarray(Image.open(io.BytesIO(_client(model_copy).get(f"/slides/{read_summary(out)['id']}/cells/{fno}/{cno}.jpg").data)))
    frame = (crop[..., 2] > 180) & (crop[..., 0] < 70) & (crop[..., 1] > 78) & (crop[..., 1] < 105)  # not a blue cell's (60, 60, 200)
    ys, xs = np.nonzero(frame)
    assert frame.sum() > 200 and abs((xs.min() + xs.max()) / 2 - crop.shape[1] / 2) < 6  # round the centre cell


def test_reviewing_every_cell_gives_the_reviewed_parasitemia_everywhere(slide, tiny_model, private_register, no_network):
    client = _client(tiny_model)
    sid = read_summary(slide)["id"]
    page = client.get(f"/slides/{sid}").get_data(as_text=True)
    token = _csrf(page)
    assert client.post(f"/slides/{sid}/review", data={"csrf_token": token, "cell": _cells(page)[0],
                                                      "decision": "reject"}).status_code == 400  # no reviewer yet
    client.post("/reviewer", data={"csrf_token": token, "reviewer": "  Dr   K ", "next": f"/slides/{sid}"})
    cells = _cells(page)
    first = client.post(f"/slides/{sid}/review", data={"csrf_token": token, "cell": cells[0], "decision": "reject"})
    assert first.status_code == 302 and first.headers["Location"].endswith(f"#cell-{cells[0].replace(':', '-')}")
    assert get_slide(connect(private_register), sid)["status"] == "in review"
    for key in cells[1:]:
        resp = client.post(f"/slides/{sid}/review", data={"csrf_token": token, "cell": key, "decision": "confirm"},
                           headers={"Accept": "application/json"})
    state = resp.get_json()
    assert state["status"] == "reviewed" and state["reviewer"] == "Dr K" and state["figure"] == "14.58 %"  # 7 of 48
    row = get_slide(connect(private_register), sid)
    assert row["reviewed_parasitemia"] == pytest.approx(7 / 48) and row["reviewers"] == "Dr K"
    assert read_summary(slide)["review"]["parasitemia"] == pytest.approx(7 / 48)
    assert "14.58 %" in client.get(f"/slides/{sid}").get_data(as_text=True)
    exported = json.loads(client.get("/export.json").data)
    assert exported[0]["reviewed_parasitemia"] == pytest.approx(7 / 48)
    assert "reviewed" in client.get("/slides?status=reviewed").get_data(as_text=True)
    assert "P-7" not in client.get("/slides?status=counted").get_data(as_text=True)


def test_refused_review_requests(slide, tiny_model, no_network):
    client = _client(tiny_model, reviewer="Dr K")
    sid = read_summary(slide)["id"]
    page = client.get(f"/slides/{sid}").get_data(as_text=True)
    token, key = _csrf(page), _cells(page)[0]
    assert client.post(f"/slides/{sid}/review", data={"cell": key, "decision": "confirm"}).status_code == 400
    assert client.post(f"/slides/{sid}/review", data={"csrf_token": "forged", "cell": key,
                                                      "decision": "confirm"}).status_code == 400
    assert client.post(f"/slides/{sid}/review", data={"csrf_token": token, "cell": "99:0",
                                                      "decision": "confirm"}).status_code == 400
    assert client.post(f"/slides/{sid}/review", data={"csrf_token": token, "cell": key,
                                                      "decision": "maybe"}).status_code == 400
    assert client.post("/slides/nope/review", data={"csrf_token": token, "cell": key,
                                                    "decision": "confirm"}).status_code == 404
    assert not (slide / "review.jsonl").exists()


@pytest.mark.parametrize("url", [
    "/slides/..%2F..%2Fetc%2Fpasswd", "/slides/{sid}/fields/../../summary.json", "/slides/{sid}/fields/-1.jpg",
    "/slides/{sid}/fields/99.jpg", "/slides/{sid}/cells/0/999.jpg", "/slides/{sid}/cells/9/0.jpg",
    "/slides/{sid}/cells/0/w0.jpg", "/slides/{sid}/cells/0/..%2F0.jpg", "/slides/{sid}/cells/0/wx.jpg", "/slides/{sid}/cells/0/w.jpg",
    "/static/../web.py", "/static/%2e%2e/web.py", "/slides/{sid}/fields/%2e%2e%2fslide.json",
])
def test_no_path_from_a_request_reaches_the_file_system(slide, tiny_model, url):
    client = _client(tiny_model)
    resp = client.get(url.format(sid=read_summary(slide)["id"]))
    assert resp.status_code == 404
    assert b"import" not in resp.data and b'"id"' not in resp.data


def test_a_slide_whose_folder_is_gone_says_so(slide, tiny_model):
    import shutil

    sid = read_summary(slide)["id"]
    shutil.rmtree(slide)
    resp = _client(tiny_model).get(f"/slides/{sid}")
    assert resp.status_code == 410 and b"slides rebuild" in resp.data


def _upload(client, files, kind="auto"):
    page = client.get("/classify").get_data(as_text=True)
    data = {"csrf_token": _csrf(page), "kind": kind, "images": files}
    return client.post("/classify", data=data, content_type="multipart/form-data")


def _png(img: Image.Image) -> io.BytesIO:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    buf.seek(0)
    return buf


def test_classify_uploaded_cells_and_fields_and_report_bad_files(slide, tiny_model, no_network):
    client = _client(tiny_model)
    field = next((slide.parent / "slide-fields").glob("*.png"))
    resp = _upload(client, [(_png(cell(RED)), "red.png"), (_png(cell(BLUE)), "blue.png"),
                            (open(field, "rb"), "field0.png"), (io.BytesIO(b"not an image"), "notes.txt")])
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert float(re.search(r"Parasitized</b> P = (0\.\d+)<br>red\.png", page).group(1)) >= 0.5
    assert float(re.search(r"Uninfected</b> P = (0\.\d+)<br>blue\.png", page).group(1)) < 0.5
    parasitized, cells = map(int, re.search(r"field0\.png: (\d+) of (\d+) cells called Parasitized", page).groups())
    assert 20 <= cells <= 24 and parasitized == 4  # the shipped detector boxes the drawn cells; the 4 red are flagged
    assert "notes.txt: not an image or unsupported format" in page
    assert _upload(client, []).status_code == 400


def test_an_oversized_upload_is_refused(tiny_model):
    client = _client(tiny_model, max_upload_mb=1)
    resp = _upload(client, [(io.BytesIO(b"\0" * (2 * 1024 * 1024)), "big.png")])
    assert resp.status_code == 413 and b"at most 1 MB" in resp.data


def test_export_downloads_follow_the_filters(slide, tiny_model):
    client = _client(tiny_model)
    csv_resp = client.get("/export.csv?q=P-7")
    assert csv_resp.status_code == 200 and "attachment" in csv_resp.headers["Content-Disposition"]
    assert len(csv_resp.get_data(as_text=True).splitlines()) == 2
    assert json.loads(client.get("/export.json?status=reviewed").data) == []
    assert client.get("/export.xml").status_code == 404
    assert "1 slide," in client.get("/export").get_data(as_text=True)


class Clock:
    """A clock the test moves on by hand."""

    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_needed_once_and_then_kept_in_the_session(slide, tiny_model):
    clock = Clock()
    client = _client(tiny_model, token="s3cret-token", clock=clock)
    sid = read_summary(slide)["id"]
    assert client.get(f"/slides/{sid}/fields/0.jpg").status_code == 401
    page = client.get("/slides", headers={"Accept": "text/html"})
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    assert client.get("/slides?token=wrong", headers={"Accept": "text/html"}).headers["Location"].startswith("/login")
    clock.now += 1.5  # the first wrong token's wait
    login = client.get("/login").get_data(as_text=True)
    bad = client.post("/login", data={"csrf_token": _csrf(login), "token": "guess", "next": "/slides"})
    assert bad.status_code == 401
    clock.now += 2.5
    good = client.get("/slides?token=s3cret-token&q=P")
    assert good.status_code == 302 and "token" not in good.headers["Location"]  # it leaves the address bar
    assert client.get("/slides").status_code == 200
    other = _client(tiny_model, token="s3cret-token")
    assert other.get("/slides", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    fresh = _client(tiny_model, token="s3cret-token")
    form = fresh.get("/login").get_data(as_text=True)
    signed_in = fresh.post("/login", data={"csrf_token": _csrf(form), "token": "s3cret-token", "next": "//evil.example/"})
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/"  # no redirect off the site


def test_serve_refuses_other_hosts_without_a_token(tmp_path):
    res = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "--token" in res.output
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.4.1")


def test_the_session_key_is_kept_owner_only_beside_the_register(tmp_path):
    from edge_app.web import session_secret

    register = tmp_path / "reg" / "register.sqlite3"
    register.parent.mkdir()
    key = session_secret(str(register))
    path = register.parent / "serve-session.key"
    assert len(key) == 32 and path.stat().st_mode & 0o077 == 0
    assert session_secret(str(register)) == key  # the same after a restart
    path.write_bytes(b"torn")
    assert len(session_secret(str(register))) == 32 != len(b"torn")


def test_a_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        res = CliRunner().invoke(main, ["serve", "--port", str(taken.getsockname()[1])])
    assert res.exit_code == 2 and "cannot listen on 127.0.0.1" in res.output and "--port" in res.output
