"""`malaria-edge serve`: the slide register and the microscopist's review in a browser, on the Pi, offline.

A Flask app served by waitress (a production WSGI server, pure Python, so it
installs on a Pi with no compiler). Pages: the slides (search and filter),
one slide (its count, fields and review grid), classifying uploaded cell or
field images, and export. Every asset is served by the app; the pages'
content security policy forbids anything else, and the app itself opens no
connection.

Guards, each tested in tests/test_web.py and tests/test_serve_attacks.py:
- listens on 127.0.0.1 unless told otherwise, and then every browser must
  give the access token once (kept in its signed session cookie, which
  expires after SESSION_HOURS, or at sign-out); a wrong token makes its
  client wait, doubling each time, without holding a server thread
  (edge_app.web_guard);
- answers only requests naming this device as their Host (no DNS
  rebinding), and redirects only to paths on this site;
- every form carries a CSRF token (Flask-WTF);
- images are found from a slide id and numbers looked up in the register,
  so no path from a request reaches the file system, and the slide folder
  must still hold that slide (slide.json) and no symbolic link is followed
  inside it;
- uploads are size-limited, decoded one at a time within a pixel budget
  that fits the service's memory limit, by the same guarded `load_rgb` as
  any input; request bodies and connections are bounded by waitress;
- a decision on a cell that another reviewer changed since the page was
  loaded is refused as a conflict, not silently overwritten.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import hmac
import io
import logging
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from PIL import Image, ImageDraw

from edge_app.labels import LABELS
from edge_app.parasitemia import Parasitemia
from edge_app.preprocess import ImageError, fit_square, load_rgb
from edge_app.register import STATUSES, Filters, connect, export, get_slide, iso_date, list_slides
from edge_app.report import (DECIDED, LEGEND, NEEDS_A_LOOK, annotate, data_uri, empty_fields, empty_text, fit_width, is_empty,
                              jpeg_bytes, pct, review_text, white_cells_text)
from edge_app.results import open_in
from edge_app.sources import FIELD_MIN_SIDE
from edge_app.review import DECISIONS, cell_key
from edge_app.slide import SlideRun, cell_boxes, read_identity, read_summary, slide_review, total_from_summary
from edge_app.decisions import DecisionRefused, decide, seen_token
from edge_app import review_grid
from edge_app.headline import headline, list_figure
from edge_app.review_grid import answer, caption, grouped
from edge_app.web_guard import Backoff, HostCheck, SignedOut, is_loopback, same_site_path

__all__ = ["create_app", "is_loopback", "make_server", "session_secret"]
log = logging.getLogger("malaria_edge.serve")

#: A reviewed cell is shown with this much of its surroundings, this many pixels a side at least.
CELL_CONTEXT = 0.6
CELL_SHOWN = 192
#: The frame round the cell under review in its crop: blue, unlike the red and green boxes of the calls.
REVIEWED_FRAME = (30, 90, 230)
#: Fields are sent at most this wide (a desktop screen; a phone scales them down).
FIELD_SHOWN = 1280
#: A browser stays signed in this long after giving the token (checked by the server, whatever the cookie says).
SESSION_HOURS = 12
#: Uploads: an image is decoded into at most this many pixels (a JPEG shrunk while it is decoded; any other format
#: this large is refused), and a field is analysed at most this large: with one upload analysed at a time, the
#: server stays within the service unit's MemoryMax (deploy/raspberry-pi/malaria-edge-serve@.service).
UPLOAD_DECODED_PIXELS = 8_000_000
UPLOAD_FIELD_PIXELS = 3_000_000
#: Form parts (files and fields) in one request: a Classify upload of this many images at most.
MAX_FORM_PARTS = 100
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def session_secret(register: str | None) -> bytes:
    """The key that signs browsers' sessions, kept beside the register (owner-only) so a restart or a reboot in the
    middle of a review keeps everyone signed in, with their reviewer name."""
    from edge_app.register import default_register_path

    path = (Path(register) if register else default_register_path()).parent / "serve-session.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # torn by a power cut while it was first written: a new one
    key = secrets.token_bytes(32)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def create_app(register: str | None = None, token: str | None = None, reviewer: str | None = None,
               model: str | None = None, detector: str | None = None, threads: int = 1, max_upload_mb: int = 25,
               secret_key: bytes | None = None, listen: str = "127.0.0.1", clock=time.time) -> Flask:
    """The web app over one register, answering requests that name `listen` (what the server listens on) or this
    device as their Host. Models are loaded on the first upload, so the slides open at once."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secret_key or secrets.token_bytes(32), MAX_CONTENT_LENGTH=max_upload_mb * 1024 * 1024,
                      MAX_FORM_PARTS=MAX_FORM_PARTS, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      WTF_CSRF_TIME_LIMIT=None, MAX_UPLOAD_MB=max_upload_mb)
    CSRFProtect(app)
    models = _Models(model, detector, threads)
    token_mac = hmac.new(app.config["SECRET_KEY"], (token or "").encode(), "sha256").hexdigest()
    hosts = HostCheck(listen)
    backoff = Backoff(clock)
    signed_out = SignedOut()

    def db() -> sqlite3.Connection:
        if "db" not in g:
            g.db = connect(register)
        return g.db

    @app.teardown_appcontext
    def close_db(_exc) -> None:
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    def signed_in() -> bool:
        return (session.get("auth") == token_mac and clock() - float(session.get("auth_at", 0)) < SESSION_HOURS * 3600
                and session.get("sid") not in signed_out)

    def sign_in() -> None:
        session.update(auth=token_mac, auth_at=clock(), sid=secrets.token_hex(8))

    def token_matches(given: str) -> bool:
        """Whether a token given by this client is right; a wrong one makes the client wait (Backoff), and while it
        waits nothing it sends is checked (429)."""
        client = request.remote_addr or "?"
        wait = backoff.wait(client)
        if wait:
            abort(429, f"Too many wrong tokens from this device: try again in {wait:.0f} s.")
        if hmac.compare_digest(given.encode(), (token or "").encode()):
            backoff.succeeded(client)
            return True
        count, wait = backoff.failed(client)
        log.warning("wrong access token from %s (%d in a row; refused for %.0f s)", client, count, wait)
        return False

    @app.before_request
    def guard():
        if not hosts.allows(request.host):
            abort(400, "This server answers only requests addressed to this device.")
        if request.url_rule is None:
            abort(404)
        if not token or request.endpoint in ("login", "static") or signed_in():
            return None
        given = request.args.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if given and token_matches(given):
            sign_in()
            if request.method == "GET" and "token" in request.args:  # it leaves the address bar (and the history)
                args = {k: v for k, v in request.args.items() if k != "token"}
                return redirect(url_for(request.endpoint, **(request.view_args or {}), **args))
            return None
        if request.method == "GET" and request.accept_mimetypes.accept_html:
            return redirect(url_for("login", next=request.full_path))
        abort(401)

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers.setdefault("Cache-Control", "no-store")  # patients' results stay off shared caches and disks
        return resp

    @app.context_processor
    def page_globals() -> dict:
        return {"reviewer": current_reviewer(), "percent": pct, "review_text": review_text, "decided_words": DECIDED,
                "field_min_side": FIELD_MIN_SIDE, "white_cells_text": white_cells_text, "is_empty": is_empty,
                "empty_fields": empty_fields, "empty_text": empty_text, "needs_a_look": NEEDS_A_LOOK,
                "can_sign_out": bool(token) and signed_in(), "seen_token": seen_token, "list_figure": list_figure, "legend": LEGEND}

    def current_reviewer() -> str | None:
        return session.get("reviewer") or reviewer

    @app.route("/login", methods=["GET", "POST"])
    def login():
        target = same_site_path(request.values.get("next"))
        if request.method == "POST":
            if token and token_matches(request.form.get("token", "").strip()):
                sign_in()
                return redirect(target)
            return render_template("login.html", next=target, failed=True), 401
        return render_template("login.html", next=target, failed=False)

    @app.route("/logout", methods=["POST"])
    def logout():
        """Sign this browser out: its session cookie is dropped, and refused from now on even if kept."""
        if session.get("sid"):
            signed_out.add(session["sid"])
        session.clear()
        return redirect(url_for("login") if token else url_for("slides"))

    @app.route("/")
    def home():
        return redirect(url_for("slides"))

    @app.route("/reviewer", methods=["POST"])
    def set_reviewer():
        name = " ".join(request.form.get("reviewer", "").split())[:80]
        if name:
            session["reviewer"] = name
        else:
            session.pop("reviewer", None)
        return redirect(same_site_path(request.form.get("next")))

    @app.route("/slides")
    def slides():
        filters = _filters(request.args)
        return render_template("slides.html", slides=list_slides(db(), filters, limit=500), filters=filters,
                               statuses=STATUSES)

    def slide_folder(slide_id: str) -> tuple[dict, Path, dict]:
        """A registered slide's row, folder and summary, once the folder is known to still hold that very slide: a
        folder moved or swapped must never show one patient's cells under another's name."""
        row = get_slide(db(), slide_id)
        if row is None:
            abort(404, f"no slide {slide_id} in the register")
        folder = Path(row["folder"])
        try:
            summary = read_summary(folder)
        except (OSError, ValueError):
            abort(410, f"slide {slide_id}'s folder {folder} is gone or damaged; `malaria-edge slides rebuild` "
                       "updates the register")
        held = read_identity(folder)["id"]
        if held != slide_id:
            abort(409, f"the folder registered for slide {slide_id}, {folder}, now holds slide {held} (moved or "
                       "swapped?): run `malaria-edge slides rebuild` on the slide folders to put the register right")
        return row, folder, summary

    @app.route("/slides/<slide_id>")
    def slide(slide_id: str):
        row, folder, summary = slide_folder(slide_id)
        review = slide_review(folder, summary)
        total, state = total_from_summary(summary), review.as_dict()
        threshold = float(summary["threshold"])
        return render_template("slide.html", row=row, summary=summary, total=total, review=review, state=state,
                               head=headline(total, state, summary.get("calibration")), fields=list(enumerate(summary["fields"])),
                               groups=grouped(review.cells), group_names=review_grid.NAMES, group_help=review_grid.HELP,
                               caption=lambda c: caption(c, threshold), answer=answer)

    @app.route("/slides/<slide_id>/fields/<int:field_no>.jpg")
    def field_image(slide_id: str, field_no: int):
        _, folder, summary = slide_folder(slide_id)
        path = _annotated_path(folder, summary, field_no)
        return _image_response(_field_jpeg(path, path.lstat().st_mtime_ns))

    @app.route("/slides/<slide_id>/cells/<int:field_no>/<cell>.jpg")
    def cell_image(slide_id: str, field_no: int, cell: str):
        """A counted cell (`cell` its number) or a white cell set apart ("w" and its place in the field), cut out."""
        _, folder, summary = slide_folder(slide_id)
        white = cell.startswith("w")
        number = cell[1:] if white else cell
        box = cell_boxes(folder, summary).get(cell_key(field_no, int(number), white)) \
            if number.isascii() and number.isdecimal() else None
        if box is None:
            abort(404)
        path = _annotated_path(folder, summary, field_no)
        return _image_response(_cell_jpeg(path, path.lstat().st_mtime_ns, box))

    @app.route("/slides/<slide_id>/review", methods=["POST"])
    def review(slide_id: str):
        slide_folder(slide_id)
        key, decision = request.form.get("cell", ""), request.form.get("decision", "")
        name = current_reviewer()
        if decision not in DECISIONS:
            abort(400, "not confirm/reject")
        if not name:
            abort(400, "enter your name as reviewer first (top of the page): each decision records who made it")
        try:
            made, summary = decide(db(), slide_id, key, decision, name, seen=request.form.get("seen"))
        except DecisionRefused as exc:
            abort(exc.status, str(exc))
        state = summary["review"]
        if request.accept_mimetypes.best == "application/json":
            head = headline(total_from_summary(summary), state, summary.get("calibration"))
            return jsonify({"cell": key, "decision": decision, "reviewer": name, "status": state["status"],
                            "decided": state["decided"], "text": review_text(state), "figure": pct(state["parasitemia"]),
                            "seen": made.seen, "headline": head.figure,
                            "headline_text": head.text[0].upper() + head.text[1:] + "."})
        return redirect(url_for("slide", slide_id=slide_id, _anchor=f"cell-{key.replace(':', '-')}"))

    @app.route("/classify", methods=["GET", "POST"])
    def classify():
        results = []
        if request.method == "POST":
            kind = request.form.get("kind", "auto")
            files = [f for f in request.files.getlist("images") if f.filename]
            if not files:
                return render_template("classify.html", results=[], error="choose one or more images first"), 400
            for f in files:
                results.append(models.classify_upload(f.filename, f.read(), kind))
        return render_template("classify.html", results=results, error=None)

    @app.route("/export")
    def export_page():
        filters = _filters(request.args)
        return render_template("export.html", filters=filters, statuses=STATUSES,
                               count=len(list_slides(db(), filters)))

    @app.route("/export.<fmt>")
    def export_file(fmt: str):
        if fmt not in ("csv", "json"):
            abort(404)
        text = export(list_slides(db(), _filters(request.args)), fmt)
        return Response(text, mimetype="text/csv" if fmt == "csv" else "application/json",
                        headers={"Content-Disposition": f'attachment; filename="slides.{fmt}"'})

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return render_template("error.html", code=400, message=f"{exc.description} Reload the page and try again."), 400

    @app.errorhandler(OSError)
    def unreadable(exc: OSError):
        """A slide folder's file that cannot be read or written (gone mid-request, or a symbolic link where a file
        should be, which is never followed): the folder is damaged, not the server."""
        message = (f"a file of this slide's folder cannot be used ({exc.strerror or exc}): the folder was changed or "
                   "damaged; `malaria-edge slides rebuild` updates the register")
        return render_template("error.html", code=410, message=message), 410

    @app.errorhandler(413)
    def too_large(_exc):
        if (request.content_length or 0) > app.config["MAX_CONTENT_LENGTH"]:
            message = f"Upload too large: at most {max_upload_mb} MB at a time."
        else:
            message = f"Too many files at once: at most {MAX_FORM_PARTS - 5} images in one upload."
        return render_template("error.html", code=413, message=message), 413

    for code in (400, 401, 404, 405, 409, 410, 429):
        app.register_error_handler(code, lambda exc, code=code: _error_page(exc, code))
    return app


def _error_page(exc, code: int) -> tuple[str, int, dict]:
    headers = {"Retry-After": "60"} if code == 429 else {}
    return render_template("error.html", code=code, message=exc.description), code, headers


def _filters(args) -> Filters:
    def date(name: str) -> str | None:  # a page's empty or mistyped date filters nothing
        try:
            return iso_date(args.get(name) or "")
        except ValueError:
            return None

    status = args.get("status") or None
    return Filters(since=date("since"), until=date("until"), status=status if status in STATUSES else None,
                   text=(args.get("q") or "").strip()[:100] or None)


def _annotated_path(folder: Path, summary: dict, field_no: int) -> Path:
    """A field's annotated image, from its position in the summary; the file name is rebuilt, never taken as given."""
    fields = summary["fields"]
    if not 0 <= field_no < len(fields) or not fields[field_no].get("annotated"):
        abort(404)
    path = folder / "annotated" / f"{SlideRun.image_name(field_no, fields[field_no]['field'])}.png"
    try:
        os.close(open_in(folder, Path("annotated") / path.name))  # a file, reached through no symbolic link
    except OSError:
        abort(404)
    return path


def _image_response(jpeg: bytes) -> Response:
    """A patient's cell or field: kept in no cache, the browser's included (the after_request default, no-store)."""
    return Response(jpeg, mimetype="image/jpeg")


@functools.lru_cache(maxsize=8)
def _decoded(path: Path, _mtime_ns: int) -> Image.Image:
    """The few fields a reviewer is looking at stay decoded: each one's cells are cut from it in turn."""
    with Image.open(open(open_in(path.parent.parent, Path(path.parent.name) / path.name), "rb")) as img:
        return img.convert("RGB")


def _field(path: Path) -> Image.Image:
    return _decoded(path, path.lstat().st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _field_jpeg(path: Path, _mtime_ns: int) -> bytes:
    return jpeg_bytes(fit_width(_field(path), FIELD_SHOWN))


@functools.lru_cache(maxsize=1024)
def _cell_jpeg(path: Path, _mtime_ns: int, box: tuple[int, int, int, int]) -> bytes:
    """The cell with its box (drawn outside it) and some of its neighbours, enlarged to judge a ring's chromatin.

    A blue frame outside its box marks the cell being reviewed: a cell
    called Uninfected has a green box like its neighbours'.
    """
    img = _field(path)
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * CELL_CONTEXT)
    left, top = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
    crop = img.crop((left, top, left + round(side), top + round(side)))
    scale = max(1.0, CELL_SHOWN / crop.width)
    if scale > 1:
        crop = crop.resize((CELL_SHOWN, CELL_SHOWN), Image.Resampling.LANCZOS)
    gap = 4 * scale
    ImageDraw.Draw(crop).rectangle(((x - left) * scale - gap, (y - top) * scale - gap, (x + w - left) * scale + gap,
                                    (y + h - top) * scale + gap), outline=REVIEWED_FRAME, width=max(2, round(scale)))
    return jpeg_bytes(crop, quality=92)


class _Models:
    """The classifier and detector for uploads, loaded on first use (a second or two on a Pi) and shared by threads."""

    def __init__(self, model: str | None, detector: str | None, threads: int):
        self.model_path, self.detector_path, self.threads = model, detector, threads
        self._lock = threading.Lock()
        self._loaded = None

    def _get(self):
        from edge_app.detect import CellDetector, default_detector_path
        from edge_app.model import ModelBundle, ModelError, default_model_path

        with self._lock:
            if self._loaded is None:
                try:
                    bundle = ModelBundle(self.model_path or default_model_path(), threads=self.threads)
                except ModelError as exc:
                    abort(500, f"the classifier cannot be loaded: {exc}")
                try:
                    finder = CellDetector(self.detector_path or default_detector_path(), threads=self.threads)
                except ModelError:
                    finder = None  # fields are then segmented classically, as `smear --segmenter classical`
                self._loaded = (bundle, finder)
            return self._loaded

    def classify_upload(self, name: str, data: bytes, kind: str) -> dict:
        """One uploaded image's calls: a cell's label, or a field's cells boxed and counted. Never raises on bad input.

        One upload is decoded and analysed at a time, within UPLOAD_DECODED_PIXELS
        and UPLOAD_FIELD_PIXELS, and the memory it took is handed back to the
        system after: several phone photos at once must not push the server
        past its service's memory limit.
        """
        bundle, finder = self._get()
        with self._lock:  # one upload at a time: its decoded pixels, one interpreter call after another
            try:
                return {"name": Path(name).name[:120], **self._calls(data, kind, bundle, finder)}
            finally:
                _give_back_memory()

    @staticmethod
    def _calls(data: bytes, kind: str, bundle, finder) -> dict:
        from edge_app.smear import classify_cells, find_field_cells

        try:
            rgb = load_rgb(io.BytesIO(data), max_decoded_pixels=UPLOAD_DECODED_PIXELS, reduce_to=UPLOAD_REDUCE_TO)
        except ImageError as exc:
            return {"error": str(exc)}
        as_field = kind == "field" or (kind == "auto" and min(rgb.shape[:2]) >= FIELD_MIN_SIDE)
        if not as_field:
            p = float(bundle.predict(fit_square(rgb, bundle.input.size, bundle.fit)[None])[0])
            return {"kind": "cell", "label": LABELS[1] if p >= bundle.threshold else LABELS[0],
                    "probability": p, "image": _data_uri(Image.fromarray(rgb), 160)}
        rgb = _within(rgb, UPLOAD_FIELD_PIXELS)
        counting = bundle.counting
        found = find_field_cells(rgb, finder)
        results = classify_cells(bundle, found.red, counting.threshold if counting else None)
        parasitized = sum(r.label == LABELS[1] for r in results)
        total = Parasitemia(len(results), parasitized, min_cells=1, errors=counting.errors if counting else None)
        return {"kind": "field", "cells": len(results), "parasitized": parasitized, "white_cells": len(found.white),
                "text": total.percent_text(), "image": _data_uri(annotate(rgb, results, found.white), 1024)}


#: An upload's shorter side is shrunk while it is decoded (a whole factor; JPEG's draft mode) to no less than twice this.
UPLOAD_REDUCE_TO = 600


def _within(rgb, pixels: int):
    """A field at most `pixels` large, shrunk by area averaging: the detector follows the cells' size, so a phone's
    24-megapixel photo of a field is found as well at a few megapixels, for a fraction of the memory."""
    import cv2

    h, w = rgb.shape[:2]
    if h * w <= pixels:
        return rgb
    f = (pixels / (h * w)) ** 0.5
    return cv2.resize(rgb, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)


def _give_back_memory() -> None:
    """Return freed memory to the system (glibc keeps freed blocks for reuse, so a large upload would keep the
    server's resident size at its peak for good)."""
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _data_uri(img: Image.Image, width: int) -> str:
    """An uploaded image inline in the result page (uploads are never stored, so they have no address)."""
    if img.width < width // 2:  # a cell image is a few dozen pixels: enlarged so it can be seen
        img = img.resize((width // 2, round(img.height * (width // 2) / img.width)), Image.Resampling.NEAREST)
    return data_uri(jpeg_bytes(fit_width(img, width)), "image/jpeg")


#: waitress's bounds: connections at once (its default, 100, let 110 idle ones lock everyone out), how long an idle
#: one is kept, and how often they are looked at; a request body larger than the upload limit is refused as it
#: arrives (waitress's default spools up to 1 GiB to disk first).
CONNECTION_LIMIT = 500
CHANNEL_TIMEOUT = 20
CLEANUP_INTERVAL = 5


def make_server(app: Flask, host: str, port: int, threads: int = 4, verbose: bool = False):
    """A waitress server listening on host:port (OSError when it cannot: the port taken, the address not this
    device's); `.run()` serves until interrupted. Quiet unless `verbose`: then one line per request."""
    from waitress.server import create_server

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is 2" after any burst of requests
    body = app.config["MAX_CONTENT_LENGTH"] + 64 * 1024  # the form's own fields and boundaries on top of the files
    handler = _request_log(app) if verbose else app
    return create_server(handler, host=host, port=port, threads=threads, ident="malaria-edge",
                         clear_untrusted_proxy_headers=True, connection_limit=CONNECTION_LIMIT,
                         channel_timeout=CHANNEL_TIMEOUT, cleanup_interval=CLEANUP_INTERVAL,
                         max_request_body_size=body, expose_tracebacks=False)


def _request_log(app: Flask):
    """The app, logging one line per request: method, path (no query: it may hold a token), status, seconds."""
    def logged(environ, start_response):
        started = time.monotonic()

        def start(status, headers, exc_info=None):
            log.info("%s %s %s %.3f s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), status.split()[0],
                     time.monotonic() - started)
            return start_response(status, headers, exc_info)
        return app(environ, start)
    return logged
