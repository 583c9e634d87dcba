"""Fields from another laboratory (issue #34): cells the first pass misses are found at another scale, scale bars and
burnt-in text are never counted, a faint stain is not taken for a blank field, an empty field needs a look; and the
point-labelled benchmark, on generated fields and (when ../shared is there) on real ones."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from benchmarks.synthetic_fields import compose_field, drawn_cell, match
from edge_app.detect import SEARCH_BELOW, CellDetector, Detection, default_detector_path
from edge_app.smear import find_field_cells, foreground_mask, overlay_mask
from tests.conftest import REPO

CHULA = REPO.parent / "shared" / "datasets" / "chula_rbc"


def _small_cells(rng: np.random.Generator, n: int, shrink: float) -> list[tuple[np.ndarray, str]]:
    """Drawn red cells `shrink` times their size (another camera's pixel scale), their dark anti-aliased rims dropped."""
    cells = []
    for _ in range(n):
        c = drawn_cell(rng, False)
        c = cv2.resize(c, (round(c.shape[1] * shrink), round(c.shape[0] * shrink)), interpolation=cv2.INTER_AREA)
        c[c.max(axis=2) < 80] = 0
        cells.append((c, "red"))
    return cells


def faint_dim(field: np.ndarray, lamp=(150, 160, 185), density: float = 0.4) -> np.ndarray:
    """A field as a faint stain under a dim bluish lamp would show it: the light each pixel absorbs scaled by
    `density`, then lit by `lamp` (what the other laboratory's first fields look like)."""
    absorbed = np.log(np.array([229.0, 219.0, 227.0]) / (field.astype(np.float64) + 1.0)).clip(0) * density
    return np.clip(np.array(lamp) * np.exp(-absorbed) - 1, 0, 255).astype(np.uint8)


def test_small_pale_cells_the_first_pass_misses_are_found_at_another_scale():
    """Cells a third of the training fields' size in pixels, faintly stained under a dim lamp: at its default scale the
    shipped detector sees them at 7 px and finds next to none; its search finds them at the scale that brings them
    to the size it was trained on."""
    detector = CellDetector(default_detector_path())
    for seed in range(2):
        rng = np.random.default_rng(seed)
        field, placed = compose_field(_small_cells(rng, 160, 1 / 3), (480, 640), rng)
        field = faint_dim(field)
        first = detector.detect(field, passes=1)
        found = detector.detect(field)
        boxes = [(d.x, d.y, d.width, d.height) for d in found]
        assert sum(d.score >= detector.threshold for d in first) < SEARCH_BELOW
        assert match(boxes, placed) >= 0.85 * len(placed) and match(boxes, placed) >= 0.9 * len(found)


class _Scaled(CellDetector):
    """A stand-in detector whose first pass finds `first` and which, at each other scale, finds what `at` says:
    the search's choice is then checked without a network."""

    def __init__(self, first, at, sizes=(18.75, 24.75)):
        self.threshold, self.scale, self._first, self._at = 0.5, 0.25, first, at
        self.meta = {"field_ranges": {"cell_size": {"min": sizes[0], "max": sizes[1]}}}
        self.box_filter = None
        self.tried: list[float] = []

    def raw(self, rgb):
        raise AssertionError("not used")

    def candidates(self, rgb, threshold=None, passes=4, floor=None):
        found, s = self._first, self.scale
        factors = self._search_factors(found, s, self.threshold) if passes > 1 else ()
        return self._searched(rgb, found, s, 0.4, self.threshold, factors)[0] if factors else found

    def _found_at(self, rgb, s, threshold):
        self.tried.append(round(s / self.scale, 2))
        return self._at.get(round(s / self.scale, 2), [])


def _cells(n: int, side: int, score: float = 0.9) -> list[Detection]:
    return [Detection(10 * i, 0, side, side, score) for i in range(n)]


def test_the_search_takes_the_scale_that_finds_many_more_cells_of_a_trained_size():
    field = np.zeros((480, 640, 3), np.uint8)
    # Too few at first: every factor is tried, and the scale with the most cells of a size the detector knows wins.
    d = _Scaled(_cells(3, 60), {2.0: _cells(80, 45), 1.5: _cells(60, 60), 3.0: _cells(200, 10)})
    assert d.candidates(field) == _cells(80, 45) and set(d.tried) == {2.0, 0.5, 1.5, 0.7, 3.0, 0.33}
    # Enough cells, but boxed at 15.5 input px, more than 10 % under the training fields' 18.75: only larger scales.
    d = _Scaled(_cells(20, 62), {2.0: _cells(90, 42), 0.5: _cells(500, 100)})
    assert d.candidates(field) == _cells(90, 42) and set(d.tried) == {2.0, 1.5, 3.0}
    # ...and a search that finds under 1.5 times as many keeps the first pass.
    d = _Scaled(_cells(20, 62), {2.0: _cells(29, 42)})
    assert d.candidates(field) == _cells(20, 62)
    # Boxed over the training sizes (a higher magnification; the boxes saturate): the smaller scales, cheap ones.
    d = _Scaled(_cells(20, 130), {0.5: _cells(70, 130)})
    assert d.candidates(field) == _cells(70, 130) and set(d.tried) == {0.5, 0.7, 0.33}
    # Cells of a size the detector knows: no search at all.
    d = _Scaled(_cells(40, 84), {2.0: _cells(400, 42)})
    assert d.candidates(field) == _cells(40, 84) and d.tried == []
    # Without recorded training sizes there is nothing to judge a scale by: no search.
    d = _Scaled(_cells(3, 60), {2.0: _cells(80, 45)})
    d.meta = {}
    assert d.candidates(field) == _cells(3, 60) and d.tried == []


def _scale_bar(field: np.ndarray, colour=(40, 230, 40)) -> tuple[int, int, int, int]:
    """Another laboratory's scale bar with its length in text, burnt into the field's corner; returns its region."""
    h, w = field.shape[:2]
    x0, y0 = w - 200, h - 100
    field[y0:, x0:] = field[y0 - 100:h - 100, x0:].mean(axis=(0, 1)).astype(np.uint8)  # a clear corner, as such bars sit
    cv2.rectangle(field, (x0 + 30, h - 40), (w - 30, h - 34), colour, -1)
    cv2.putText(field, "20.00um", (x0 + 30, h - 55), cv2.FONT_HERSHEY_SIMPLEX, 1.0, colour, 2, cv2.LINE_AA)
    return x0, y0, 200, 100


@pytest.mark.parametrize("colour", [(40, 230, 40), (10, 10, 10)])
def test_a_scale_bar_with_text_is_not_counted(colour):
    detector = CellDetector(default_detector_path())
    rng = np.random.default_rng(3)
    field, placed = compose_field(_small_cells(rng, 70, 0.5), (480, 640), rng)
    x0, y0, bw, bh = _scale_bar(field, colour)
    assert overlay_mask(field)[y0:, x0:].mean() > 0.02 and overlay_mask(field)[:y0].mean() == 0
    red = find_field_cells(field, detector).red
    on_bar = [c for c in red if c.x + c.width > x0 + 25 and c.y + c.height > y0 + 40]
    assert on_bar == []
    assert match([(c.x, c.y, c.width, c.height) for c in red], placed) >= 0.85 * len([p for p in placed if p.x + p.width < x0])


def test_a_box_on_the_text_is_dropped_whatever_the_detector_says(monkeypatch):
    field = np.full((480, 640, 3), (170, 200, 190), np.uint8)  # a greenish background, as that laboratory's
    x0, y0, _, _ = _scale_bar(field)
    on_text, on_field = Detection(x0 + 28, y0 + 10, 60, 45, 0.9), Detection(100, 100, 45, 45, 0.9)
    detector = CellDetector(default_detector_path())
    monkeypatch.setattr(detector, "detect", lambda rgb: [on_field, on_text])
    found = find_field_cells(field, detector)
    assert [(c.x, c.y) for c in found.red + found.white] == [(100, 100)]


def test_a_green_tinted_lamp_is_not_an_overlay():
    """A whole field far greener than usual (its background's green leads by 90 levels; the training fields' by 15-50)
    is not taken for an overlay: no cell loses its box to the rule."""
    from edge_app.smear import INK_SHARE

    rng = np.random.default_rng(0)
    field, placed = compose_field(_small_cells(rng, 60, 0.5), (480, 640), rng)
    tinted = np.clip(field.astype(np.int16) * (0.55, 1.0, 0.6), 0, 255).astype(np.uint8)
    ink = overlay_mask(tinted)
    assert max(ink[p.y:p.y + p.height, p.x:p.x + p.width].mean() for p in placed) < INK_SHARE


def test_a_faint_stain_under_a_dim_lamp_is_a_field_not_a_blank():
    """Cells 12 % darker than the background: the classical segmentation's blank-field rule is relative, and boxes from
    a detector always get the cells' own pixels, never black crops."""
    rng = np.random.default_rng(1)
    field, _ = compose_field(_small_cells(rng, 60, 0.5), (480, 640), rng)
    faint = faint_dim(field, density=0.3)
    assert foreground_mask(faint).mean() > 0.1
    assert foreground_mask(np.full((480, 640, 3), 140, np.uint8)).max() == 0


def test_points_are_matched_one_to_one_by_boxes_holding_them():
    pytest.importorskip("scipy", reason="matching needs the train extra")
    from training.fields import match_points

    points = np.array([[10, 10], [30, 10], [12, 12], [200, 200]])
    boxes = np.array([[0, 0, 20, 20], [25, 0, 20, 20]])
    assert match_points(points, boxes) == 2  # two points in the first box: one of them found
    assert match_points(points, np.zeros((0, 4))) == 0 and match_points(np.zeros((0, 2)), boxes) == 0


def test_point_labels_are_read_and_a_bad_line_is_named(tmp_path):
    pytest.importorskip("scipy", reason="the field protocol needs the train extra")
    from training.fields import load_points

    (tmp_path / "1.txt").write_text("594 95 0\n601 151 8\n")
    assert load_points(tmp_path)["1"].tolist() == [[594, 95], [601, 151]]
    (tmp_path / "2.txt").write_text("594\n")
    with pytest.raises(ValueError, match="2.txt"):
        load_points(tmp_path)


def test_an_empty_field_needs_a_look_in_the_report_and_the_terminal(tmp_path, tiny_model):
    from edge_app.cli import main

    rng = np.random.default_rng(2)
    folder = tmp_path / "fields"
    folder.mkdir()
    Image.fromarray(compose_field(_small_cells(rng, 60, 1.0), (480, 640), rng)[0]).save(folder / "a.png")
    Image.new("RGB", (640, 480), (228, 218, 226)).save(folder / "b.png")
    res = CliRunner().invoke(main, ["smear", str(folder), "--out", str(tmp_path / "s"), "--model", str(tiny_model)])
    assert res.exit_code == 0, res.output
    assert "1 of 2 fields had no red cell found: it needs a look" in res.output and "100x oil" in res.output
    page = (tmp_path / "s" / "report.html").read_text()
    assert "needs a look" in page and 'id="empty-fields"' in page


def test_the_benchmark_scores_point_labelled_fields(tmp_path, capsys):
    """Generated fields in the other laboratory's layout: images/ and labels/ with a point on each cell."""
    pytest.importorskip("scipy", reason="the benchmark's matching needs the train extra")
    from benchmarks.other_lab_fields import main

    rng = np.random.default_rng(4)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for n in (1, 2, 300):
        field, placed = compose_field(_small_cells(rng, 90, 0.55), (480, 640), rng)
        Image.fromarray(field).save(tmp_path / "images" / f"{n}.jpg", quality=92)
        (tmp_path / "labels" / f"{n}.txt").write_text("".join(f"{p.centre[0]:.0f} {p.centre[1]:.0f} 0\n" for p in placed))
    Image.new("RGB", (640, 480), (150, 160, 185)).save(tmp_path / "images" / "301.jpg")  # an empty, unlabelled field
    out = tmp_path / "o.json"
    assert main(["--data", str(tmp_path), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["all"]["labelled_fields"] == 3 and report["all"]["found_share"] >= 0.9
    assert report["all"]["dense_fields_empty"] == 0 and report["all"]["empty_fields"] == ["301.jpg"]
    assert set(report["blocks"]) == {"0", "1"} and report["all"]["field_check"]["no cells"] == 1
    assert "found" in capsys.readouterr().out


@pytest.mark.realdata
@pytest.mark.skipif(not (CHULA / "labels").is_dir(), reason="needs ../shared/datasets/chula_rbc")
def test_real_fields_of_another_laboratory_are_found_and_none_is_empty(tmp_path):
    """Ten of the other laboratory's fields, among them the pale ones the first pass found nothing in."""
    pytest.importorskip("scipy", reason="the benchmark's matching needs the train extra")
    from benchmarks.other_lab_fields import main

    data = tmp_path / "chula"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for n in (1, 3, 18, 20, 28, 30, 300, 320, 605, 630):
        (data / "images" / f"{n}.jpg").symlink_to(CHULA / "images" / f"{n}.jpg")
        if (CHULA / "labels" / f"{n}.txt").exists():
            (data / "labels" / f"{n}.txt").symlink_to(CHULA / "labels" / f"{n}.txt")
    out = tmp_path / "o.json"
    assert main(["--data", str(data), "--json", str(out)]) == 0
    report = json.loads(out.read_text())["all"]
    assert report["dense_fields_empty"] == 0 and report["found_share"] >= 0.8
    assert report["called_parasitized_share"] <= 0.01
