"""`malaria-edge serve`: the slide register and the microscopist's review in a browser, on the Pi, offline.

A Flask app served by waitress (a production WSGI server, pure Python, so it
installs on a Pi with no compiler). Pages: the slides (search and filter),
one slide (its count, fields and review grid), classifying uploaded cell or
field images, and export. Every asset is served by the app; the pages'
content security policy forbids anything else, and the app itself opens no
connection.

Guards, each tested in tests/test_web.py:
- listens on 127.0.0.1 unless told otherwise, and then every browser must
  give the access token once (kept in its signed session cookie);
- every form carries a CSRF token (Flask-WTF);
- images are found from a slide id and numbers looked up in the register,
  so no path from a request reaches the file system;
- uploads are size-limited and decoded by the same guarded `load_rgb` as any
  input.
"""

from __future__ import annotations

import functools
import hmac
import io
import ipaddress
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
from edge_app.register import STATUSES, Filters, connect, export, get_slide, index_slide, iso_date, list_slides
from edge_app.report import DECIDED, annotate, data_uri, fit_width, jpeg_bytes, pct, review_text, white_cells_text
from edge_app.review import DECISIONS, cell_key, record_decision
from edge_app.slide import SlideRun, cell_boxes, publish, read_summary, slide_review, total_from_summary

#: Uploads at least this many pixels on their shorter side are fields (cells are about 100-200 px).
FIELD_MIN_SIDE = 400
#: A reviewed cell is shown with this much of its surroundings, this many pixels a side at least.
CELL_CONTEXT = 0.6
CELL_SHOWN = 192
#: The frame round the cell under review in its crop: blue, unlike the red and green boxes of the calls.
REVIEWED_FRAME = (30, 90, 230)
#: Fields are sent at most this wide (a desktop screen; a phone scales them down).
FIELD_SHOWN = 1280
#: A wrong token costs the guesser this long (a 6-digit PIN then takes weeks to find).
FAILED_LOGIN_DELAY = 1.0
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
               secret_key: bytes | None = None) -> Flask:
    """The web app over one register. Models are loaded on the first upload, so the slides open at once."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secret_key or secrets.token_bytes(32), MAX_CONTENT_LENGTH=max_upload_mb * 1024 * 1024,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict", WTF_CSRF_TIME_LIMIT=None,
                      MAX_UPLOAD_MB=max_upload_mb)
    CSRFProtect(app)
    models = _Models(model, detector, threads)
    token_mac = hmac.new(app.config["SECRET_KEY"], (token or "").encode(), "sha256").hexdigest()

    def db() -> sqlite3.Connection:
        if "db" not in g:
            g.db = connect(register)
        return g.db

    @app.teardown_appcontext
    def close_db(_exc) -> None:
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    @app.before_request
    def require_token():
        if not token or request.endpoint in ("login", "static") or session.get("auth") == token_mac:
            return None
        given = request.args.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if given and hmac.compare_digest(given.encode(), token.encode()):
            session["auth"] = token_mac
            if request.method == "GET" and "token" in request.args:  # it leaves the address bar (and the history)
                args = {k: v for k, v in request.args.items() if k != "token"}
                return redirect(url_for(request.endpoint, **(request.view_args or {}), **args))
            return None
        if given:
            time.sleep(FAILED_LOGIN_DELAY)
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
                "field_min_side": FIELD_MIN_SIDE, "white_cells_text": white_cells_text}

    def current_reviewer() -> str | None:
        return session.get("reviewer") or reviewer

    @app.route("/login", methods=["GET", "POST"])
    def login():
        target = _local(request.values.get("next"))
        if request.method == "POST":
            if token and hmac.compare_digest(request.form.get("token", "").strip().encode(), token.encode()):
                session["auth"] = token_mac
                return redirect(target)
            time.sleep(FAILED_LOGIN_DELAY)
            return render_template("login.html", next=target, failed=True), 401
        return render_template("login.html", next=target, failed=False)

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
        return redirect(_local(request.form.get("next")))

    @app.route("/slides")
    def slides():
        filters = _filters(request.args)
        return render_template("slides.html", slides=list_slides(db(), filters, limit=500), filters=filters,
                               statuses=STATUSES)

    def slide_folder(slide_id: str) -> tuple[dict, Path, dict]:
        row = get_slide(db(), slide_id)
        if row is None:
            abort(404, f"no slide {slide_id} in the register")
        folder = Path(row["folder"])
        try:
            return row, folder, read_summary(folder)
        except (OSError, ValueError):
            abort(410, f"slide {slide_id}'s folder {folder} is gone or damaged; `malaria-edge slides rebuild` "
                       "updates the register")

    @app.route("/slides/<slide_id>")
    def slide(slide_id: str):
        row, folder, summary = slide_folder(slide_id)
        review = slide_review(folder, summary)
        return render_template("slide.html", row=row, summary=summary, total=total_from_summary(summary),
                               review=review, state=review.as_dict(), fields=list(enumerate(summary["fields"])))

    @app.route("/slides/<slide_id>/fields/<int:field_no>.jpg")
    def field_image(slide_id: str, field_no: int):
        _, folder, summary = slide_folder(slide_id)
        path = _annotated_path(folder, summary, field_no)
        return _image_response(_field_jpeg(path, path.stat().st_mtime_ns))

    @app.route("/slides/<slide_id>/cells/<int:field_no>/<cell>.jpg")
    def cell_image(slide_id: str, field_no: int, cell: str):
        """A counted cell (`cell` its number) or a white cell set apart ("w" and its place in the field), cut out."""
        _, folder, summary = slide_folder(slide_id)
        white = cell.startswith("w")
        number = cell[1:] if white else cell
        box = cell_boxes(folder, summary).get(cell_key(field_no, int(number), white)) if number.isdigit() else None
        if box is None:
            abort(404)
        path = _annotated_path(folder, summary, field_no)
        return _image_response(_cell_jpeg(path, path.stat().st_mtime_ns, box))

    @app.route("/slides/<slide_id>/review", methods=["POST"])
    def review(slide_id: str):
        _, folder, summary = slide_folder(slide_id)
        key, decision = request.form.get("cell", ""), request.form.get("decision", "")
        cells = {c.key: c for c in slide_review(folder, summary).cells}
        name = current_reviewer()
        if key not in cells or decision not in DECISIONS:
            abort(400, "not a cell of this slide's review, or not confirm/reject")
        if not name:
            abort(400, "enter your name as reviewer first (top of the page): each decision records who made it")
        record_decision(folder, cells[key], decision, name)
        summary = publish(folder)
        index_slide(db(), folder)
        state = summary["review"]
        if request.accept_mimetypes.best == "application/json":
            return jsonify({"cell": key, "decision": decision, "reviewer": name, "status": state["status"],
                            "decided": state["decided"], "text": review_text(state), "figure": pct(state["parasitemia"])})
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

    @app.errorhandler(413)
    def too_large(_exc):
        return render_template("error.html", code=413,
                               message=f"Upload too large: at most {max_upload_mb} MB at a time."), 413

    for code in (400, 401, 404, 410):
        app.register_error_handler(code, lambda exc, code=code: (
            render_template("error.html", code=code, message=exc.description), code))
    return app


def _local(target: str | None) -> str:
    """A redirect target only if it stays on this site (a path, not //elsewhere or a scheme)."""
    return target if target and target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


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
    if not path.is_file():
        abort(404)
    return path


def _image_response(jpeg: bytes) -> Response:
    return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@functools.lru_cache(maxsize=8)
def _decoded(path: Path, _mtime_ns: int) -> Image.Image:
    """The few fields a reviewer is looking at stay decoded: each one's cells are cut from it in turn."""
    with Image.open(path) as img:
        return img.convert("RGB")


def _field(path: Path) -> Image.Image:
    return _decoded(path, path.stat().st_mtime_ns)


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
        """One uploaded image's calls: a cell's label, or a field's cells boxed and counted. Never raises on bad input."""
        from edge_app.smear import classify_cells, find_field_cells

        base = {"name": Path(name).name[:120]}
        try:
            rgb = load_rgb(io.BytesIO(data))
        except ImageError as exc:
            return {**base, "error": str(exc)}
        bundle, finder = self._get()
        as_field = kind == "field" or (kind == "auto" and min(rgb.shape[:2]) >= FIELD_MIN_SIDE)
        with self._lock:  # one interpreter, one call at a time
            if not as_field:
                p = float(bundle.predict(fit_square(rgb, bundle.input.size, bundle.fit)[None])[0])
                return {**base, "kind": "cell", "label": LABELS[1] if p >= bundle.threshold else LABELS[0],
                        "probability": p, "image": _data_uri(Image.fromarray(rgb), 160)}
            counting = bundle.counting
            found = find_field_cells(rgb, finder)
            results = classify_cells(bundle, found.red, counting.threshold if counting else None)
        parasitized = sum(r.label == LABELS[1] for r in results)
        total = Parasitemia(len(results), parasitized, min_cells=1, errors=counting.errors if counting else None)
        return {**base, "kind": "field", "cells": len(results), "parasitized": parasitized, "white_cells": len(found.white),
                "text": total.percent_text(), "image": _data_uri(annotate(rgb, results, found.white), 1024)}


def _data_uri(img: Image.Image, width: int) -> str:
    """An uploaded image inline in the result page (uploads are never stored, so they have no address)."""
    if img.width < width // 2:  # a cell image is a few dozen pixels: enlarged so it can be seen
        img = img.resize((width // 2, round(img.height * (width // 2) / img.width)), Image.Resampling.NEAREST)
    return data_uri(jpeg_bytes(fit_width(img, width)), "image/jpeg")


def make_server(app: Flask, host: str, port: int, threads: int = 4):
    """A waitress server listening on host:port (OSError when it cannot: the port taken, the address not this
    device's); `.run()` serves until interrupted."""
    from waitress.server import create_server

    return create_server(app, host=host, port=port, threads=threads, ident="malaria-edge",
                         clear_untrusted_proxy_headers=True)
