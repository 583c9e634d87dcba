"""The cell-detector bundle: input pixels, decoding, sidecar checks, and finding cells with a real TFLite file
(the tiny hand-built detector of conftest)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_app.detect import (ALONE_MARGIN, ALONE_OVERLAP, LARGE_CELL_AREA, LARGE_CELL_MARGIN, NEIGHBOUR_SCALES, STRIDE,
                             CellDetector, Detection, decode, field_input, kept_cells)
from edge_app.model import ModelError

from tests.fixtures.build import DETECTOR_SCALE as SCALE
from tests.fixtures.build import DETECTOR_SHAPE as SHAPE


def test_field_input_keeps_shape_and_pads_with_the_background():
    field = np.full((240, 200, 3), (200, 210, 220), np.uint8)
    field[100:140, 80:120] = (90, 40, 120)
    pixels, scale = field_input(field, *SHAPE, SCALE)
    assert pixels.shape == (*SHAPE, 3) and pixels.dtype == np.uint8
    assert scale == pytest.approx(SCALE)  # 240x200 fits at 0.25: 60x50
    assert (pixels[:, 50:] == (200, 210, 220)).all()  # padding is the field's background colour
    assert (pixels[30, 25] == (90, 40, 120)).all()  # the dark square, a quarter of the way in
    big, s = field_input(np.zeros((960, 1920, 3), np.uint8), *SHAPE, SCALE)
    assert s == pytest.approx(96 / 1920)  # too wide at 0.25: shrunk further, never stretched


def test_decode_maps_peaks_back_to_field_pixels():
    heat = np.zeros((10, 10), np.float32)
    heat[2, 3], heat[2, 4] = 0.9, 0.5  # a peak and its weaker neighbour: one cell
    heat[7, 7] = 0.3  # below threshold
    box = np.zeros((10, 10, 4), np.float32)
    box[2, 3] = (5.0, 4.0, 0.25, -0.25)  # 5x4 grid cells, centre a quarter cell right and up
    found = decode(heat, box, 0.4, scale=0.5, field_shape=(80, 80))
    assert len(found) == 1
    d = found[0]
    cx, cy = (3 + 0.5 + 0.25) * STRIDE / 0.5, (2 + 0.5 - 0.25) * STRIDE / 0.5
    assert (d.x, d.y, d.width, d.height) == (round(cx - 20), round(cy - 16), 40, 32)
    assert d.score == pytest.approx(0.9)
    assert decode(np.zeros((4, 4)), np.zeros((4, 4, 4)), 0.5, 1.0, (16, 16)) == []


def test_decode_clips_to_the_field_and_drops_duplicates():
    heat = np.zeros((10, 10), np.float32)
    heat[0, 0], heat[0, 2] = 0.9, 0.8  # two peaks whose boxes overlap almost entirely
    box = np.zeros((10, 10, 4), np.float32)
    box[0, 0] = (6, 6, 0.5, 0)
    box[0, 2] = (6, 6, -1.4, 0)
    found = decode(heat, box, 0.5, 1.0, (40, 40))
    assert len(found) == 1 and found[0].x == 0 and found[0].y == 0


def test_a_box_under_the_threshold_is_kept_when_large_or_a_cell_alone():
    field = (1000, 1200)
    confident = [Detection(100 * i + 10, 10, 80, 80 + i, 0.9) for i in range(5)]  # median area 80 x 82
    side = int(np.ceil(np.sqrt(LARGE_CELL_AREA * 80 * 82)))
    big_weak, big_dark = Detection(10, 200, 110, 110, 0.45), Detection(400, 200, 200, 200, 0.5 - LARGE_CELL_MARGIN - 0.01)
    just_large = Detection(700, 200, side, side, 0.45)
    alone = Detection(200, 500, 80, 80, 0.5 - ALONE_MARGIN + 0.01)  # a typical cell where nothing else is
    on_a_cell = Detection(20, 20, 80, 80, 0.45)  # over a confident box: a second box on a counted cell
    touching = Detection(400, 500, 80, 80, 0.4)
    beside = Detection(400 + int(80 * (1 - ALONE_OVERLAP)) - 8, 500, 80, 80, 0.38)  # shares over ALONE_OVERLAP with it
    at_edge = Detection(0, 700, 80, 80, 0.45)  # cut by the field's edge
    fragment = Detection(700, 700, 40, 40, 0.45)  # under ALONE_AREA of a cell
    too_weak = Detection(900, 700, 80, 80, 0.5 - ALONE_MARGIN - 0.01)
    found = confident + [big_weak, big_dark, just_large, alone, on_a_cell, touching, beside, at_edge, fragment, too_weak]
    kept = kept_cells(found, 0.5, field)
    assert set(kept) == set(confident + [big_weak, just_large, alone, touching])
    assert kept_cells([big_weak, alone], 0.5, field) == []  # nothing confident: no size to compare with


def test_the_detector_keeps_large_cells_and_cells_alone_below_its_threshold(tiny_detector, monkeypatch):
    detector = CellDetector(tiny_detector)
    t = detector.threshold
    heat = np.zeros((30, 40), np.float32)
    box = np.zeros((30, 40, 4), np.float32)
    cells = {(3, 3): (t + 0.1, 5), (3, 12): (t + 0.1, 5), (3, 21): (t + 0.1, 5),  # typical cells, 5 grid cells wide
             (15, 3): (t - LARGE_CELL_MARGIN / 2, 7),  # large, just under: kept
             (15, 12): (t - ALONE_MARGIN / 2, 5),  # typical and alone, under: kept
             (15, 21): (t - LARGE_CELL_MARGIN * 1.5, 7),  # large, too far under for a large cell, too large for one alone
             (15, 30): (t - ALONE_MARGIN * 1.5, 5),  # typical, too far under: dropped
             (25, 30): (t - LARGE_CELL_MARGIN / 2, 6)}  # 1.44 times a typical cell's area: kept
    for (y, x), (score, size) in cells.items():
        heat[y, x], box[y, x] = score, (size, size, 0, 0)
    monkeypatch.setattr(detector, "raw", lambda rgb: (heat, box, 1.0))
    found = detector.detect(np.full((120, 160, 3), 235, np.uint8))  # blank: a search at other scales finds nothing
    centres = {(round((d.y + d.height / 2) / STRIDE - 0.5), round((d.x + d.width / 2) / STRIDE - 0.5)) for d in found}
    assert centres == {(3, 3), (3, 12), (3, 21), (15, 3), (15, 12), (25, 30)}


def test_a_rescaled_field_adds_cells_alone_from_neighbouring_scales_only_where_one_pass_holds_it(tiny_detector, monkeypatch):
    detector = CellDetector(tiny_detector)
    t = detector.threshold
    confident = [Detection(40 * i + 10, 10, 30, 30, t + 0.2) for i in range(4)]
    missed = Detection(100, 100, 30, 30, t + 0.1)  # found only at a neighbouring scale, where nothing was kept
    again = Detection(12, 12, 30, 30, t + 0.3)  # a stronger box on a cell already counted: never a second one
    asked = []

    def found_at(rgb, s, floor):
        asked.append(round(s, 4))
        return [missed, again]

    monkeypatch.setattr(detector, "_found_at", found_at)
    field = np.full((200, 300, 3), 235, np.uint8)
    scale = min(detector.height / 200, detector.width / 300)  # the field just fits one pass
    monkeypatch.setattr(detector, "_scaled_candidates", lambda rgb, threshold, passes, floor: (confident, scale, 0.25))
    assert set(detector.detect(field)) == set(confident + [missed])
    assert asked == [round(scale * f, 4) for f in NEIGHBOUR_SCALES]
    asked.clear()
    monkeypatch.setattr(detector, "_scaled_candidates", lambda rgb, threshold, passes, floor: (confident, 0.25, 0.25))
    assert set(detector.detect(field)) == set(confident) and asked == []  # at its default scale: no other pass
    monkeypatch.setattr(detector, "_scaled_candidates", lambda rgb, threshold, passes, floor: (confident, 1.1 * scale, 0.25))
    assert set(detector.detect(field)) == set(confident) and asked == []  # enlarged into tiles: too dear on a Pi


def _field_with_discs(centres, radius=28, shape=(256, 384)):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    field = np.full((*shape, 3), 235, np.uint8)
    for cx, cy in centres:
        field[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2] = (120, 40, 110)
    return field


def test_tiny_detector_finds_each_disc(tiny_detector):
    pytest.importorskip("scipy", reason="matching boxes needs the train extra")
    from training.fields import match_boxes

    centres = [(64, 64), (200, 72), (320, 180), (100, 190)]
    found = CellDetector(tiny_detector).detect(_field_with_discs(centres))
    truth = np.array([[cx - 32, cy - 32, 64, 64] for cx, cy in centres])
    boxes = np.array([[d.x, d.y, d.width, d.height] for d in found]).reshape(-1, 4)
    assert len(found) == len(centres) and len(match_boxes(truth, boxes)) == len(centres)
    assert [d.y + d.height // 2 for d in found] == sorted(d.y + d.height // 2 for d in found)  # reading order
    assert CellDetector(tiny_detector).detect(np.full((256, 384, 3), 235, np.uint8)) == []


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    dst.with_suffix(".json").write_text(src.with_suffix(".json").read_text())
    return dst


def test_tampered_or_wrong_kind_detector_is_refused(tiny_detector, tiny_model, tmp_path):
    bad = _copy(tiny_detector, tmp_path / "bad.tflite")
    bad.write_bytes(bad.read_bytes()[:-8] + b"tampered")
    with pytest.raises(ModelError, match="sha256"):
        CellDetector(bad)
    with pytest.raises(ModelError, match="cell-detector"):
        CellDetector(tiny_model)  # a classifier bundle is not a detector
    side = _copy(tiny_detector, tmp_path / "det.tflite").with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["input"]["shape"] = [32, 48, 3]
    side.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="shapes"):
        CellDetector(tmp_path / "det.tflite")



def test_optical_density_input_is_the_same_for_any_lamp_or_stain_strength():
    from edge_app.detect import OD_CELL_LEVEL, optical_density

    yy, xx = np.mgrid[0:120, 0:160]
    transmitted = np.ones((120, 160, 3))
    for cx, cy in [(40, 40), (110, 50), (70, 90)]:
        transmitted[(xx - cx) ** 2 + (yy - cy) ** 2 <= 18 ** 2] = (0.6, 0.35, 0.55)  # a stained cell lets less light through

    def photograph(lamp, stain_strength):
        return np.clip(np.array(lamp) * transmitted ** stain_strength, 0, 255).astype(np.uint8)

    pale = optical_density(photograph((230, 240, 225), 0.6))  # weak stain under a warm lamp
    vivid = optical_density(photograph((200, 215, 250), 1.8))  # heavy stain under a blue lamp
    assert np.abs(pale.astype(int) - vivid.astype(int)).max() <= 4
    assert abs(float(np.median(vivid[90, 60:80])) - OD_CELL_LEVEL) <= 3 and vivid[5, 5].max() <= 2  # cells ~80, background ~0
    padded, _ = field_input(photograph((230, 240, 225), 1.0), *SHAPE, SCALE, "od")
    assert (padded[:, 40:] == 0).all()  # padding is zero density


def test_detector_with_an_unknown_stain_input_is_refused(tiny_detector, tmp_path):
    det = tmp_path / "det.tflite"
    det.write_bytes(tiny_detector.read_bytes())
    meta = json.loads(tiny_detector.with_suffix(".json").read_text())
    meta["input"]["stain"] = "hematoxylin-only"
    det.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="stain input"):
        CellDetector(det)


def test_a_plateau_of_equal_maxima_is_one_cell():
    heat = np.zeros((10, 12), np.float32)
    heat[4, 3:6] = 0.8  # three equal neighbours, as int8 outputs often give
    box = np.zeros((10, 12, 4), np.float32)
    box[..., :2] = 1.0  # boxes too small to overlap: only the plateau rule can merge them
    found = decode(heat, box, 0.5, 1.0, (40, 48))
    assert len(found) == 1 and found[0].x + found[0].width / 2 == pytest.approx((4 + 0.5) * STRIDE, abs=1)


def test_tiles_cover_a_side_overlapping_the_last_one_flush():
    from edge_app.detect import TILE_OVERLAP, _tile_origins

    assert _tile_origins(240, 240) == [0]
    origins = _tile_origins(700, 240)
    assert origins[0] == 0 and origins[-1] == 700 - 240
    assert all(0 < b - a <= 240 - TILE_OVERLAP for a, b in zip(origins, origins[1:]))
    assert _tile_origins(100, 64) == [0, 32, 36]  # a small input: tiles half a tile apart


def test_cells_far_from_the_trained_size_are_found_again_at_their_scale_in_tiles(tiny_detector, tmp_path):
    """The tiny detector's boxes are always 16 input px; told it was trained on 21 px cells, it rescales the field
    (four passes, 0.25 to about 0.57) until the field no longer fits its input, and is then run on overlapping tiles:
    each disc, those across the tiles' seams too, is found once, and its box lies on it."""
    pytest.importorskip("scipy", reason="matching boxes needs the train extra")
    from training.fields import match_boxes

    det = _copy(tiny_detector, tmp_path / "det.tflite")
    side = det.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["field_ranges"] = {"cell_size": {"min": 21.0, "max": 21.0}}
    side.write_text(json.dumps(meta))
    centres = [(40, 40), (170, 60), (300, 40), (90, 130), (230, 120), (340, 200), (60, 215), (180, 200)]
    field = _field_with_discs(centres, radius=16)
    detector = CellDetector(det)
    found = detector.detect(field)
    truth = np.array([[cx - 16, cy - 16, 32, 32] for cx, cy in centres])
    boxes = np.array([[d.x, d.y, d.width, d.height] for d in found]).reshape(-1, 4)
    assert len(found) == len(centres) and len(match_boxes(truth, boxes)) == len(centres)
    assert all(25 <= d.width <= 31 for d in found)  # 16 input px at the last scale, about 0.57
    at_default = detector.detect(field, passes=1)
    assert all(d.width == 64 for d in at_default)  # 16 input px at 0.25: what the adaptation started from


def test_a_field_is_never_rescaled_beyond_max_rescale(tiny_detector, tmp_path):
    """Told it was trained on 64 px cells, the tiny detector (16 px boxes) would enlarge the field 4 times; it stops at
    MAX_RESCALE, where its boxes are 16 / (0.25 * 3) = 21 field px."""
    from edge_app.detect import MAX_RESCALE

    det = _copy(tiny_detector, tmp_path / "det.tflite")
    side = det.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["field_ranges"] = {"cell_size": {"min": 64.0, "max": 64.0}}
    side.write_text(json.dumps(meta))
    found = CellDetector(det).detect(_field_with_discs([(100, 100), (250, 150)], radius=16))
    widths = [d.width for d in found]
    assert widths and max(widths) == round(16 / (SCALE * MAX_RESCALE))
