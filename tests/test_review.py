"""Review arithmetic: which cells a microscopist sees, how decisions are kept, and the reviewed parasitemia."""

from __future__ import annotations

import json

import pytest

from edge_app.parasitemia import CountingErrors, Parasitemia, wilson_interval
from edge_app.review import (ENLARGED_AREA, REVIEW_FILE, SPOT_CHECKS, SPOT_POOL, WHITE_CALL, Review, ReviewCell,
                             read_decisions, record_decision, review_cells)
from edge_app.slide import read_summary, slide_review
from tests.conftest import drawn_slide


def _rows(n_fields: int = 3, per_field: int = 40, flagged_every: int = 10) -> list[dict]:
    rows = []
    for f in range(n_fields):
        for c in range(per_field):
            p = 0.9 if c % flagged_every == 0 else c / (per_field * 2)  # uninfected: 0 .. 0.49, distinct
            rows.append({"field": f"f{f}.png", "cell": c, "x": c, "y": 0, "width": 10, "height": 10,
                         "label": "Parasitized" if p >= 0.5 else "Uninfected", "probability": p, "status": "ok"})
    rows.append({"field": "broken.png", "cell": None, "x": None, "y": None, "width": None, "height": None,
                 "label": None, "probability": None, "status": "error"})
    return rows


def test_every_flagged_cell_then_a_seeded_sample_of_the_uninfected_cells_nearest_the_threshold():
    rows = _rows()
    cells = review_cells(rows, seed="slide-1")
    flagged = [c for c in cells if not c.spot_check]
    spot = [c for c in cells if c.spot_check]
    assert len(flagged) == 12 and all(c.call == "Parasitized" for c in flagged)
    assert len(spot) == SPOT_CHECKS and all(c.call == "Uninfected" for c in spot)
    uninfected = sorted((r["probability"] for r in rows if r["label"] == "Uninfected"), reverse=True)
    assert min(c.probability for c in spot) >= uninfected[SPOT_POOL * SPOT_CHECKS - 1]  # from the nearest pool
    assert review_cells(rows, seed="slide-1") == cells  # the same cells after a restart
    assert {c.key for c in review_cells(rows, seed="slide-2")} != {c.key for c in cells}  # another slide, another draw
    assert {c.field_no for c in cells} <= {0, 1, 2}


def test_a_small_slide_shows_all_its_uninfected_cells():
    cells = review_cells(_rows(n_fields=1, per_field=10), seed="s")
    assert len([c for c in cells if c.spot_check]) == 9


def _white(field: str, x: int) -> dict:
    return {"field": field, "cell": None, "x": x, "y": 5, "width": 12, "height": 12, "label": None, "probability": None,
            "status": "white_cell"}


def test_every_white_cell_set_apart_is_shown_after_the_flagged_cells_each_by_its_place_in_its_field():
    rows = _rows(n_fields=2)
    rows[45:45] = [_white("f1.png", 3), _white("f1.png", 70)]  # among field 1's rows, as a count writes them last
    rows.append(_white("f0.png", 9))  # a field resumed later keeps its position
    cells = review_cells(rows, seed="slide-1", white_cells=True)
    white = [c for c in cells if c.white]
    assert [(c.key, c.box[0], c.call) for c in white] == [("1:w0", 3, WHITE_CALL), ("1:w1", 70, WHITE_CALL),
                                                         ("0:w0", 9, WHITE_CALL)]
    assert all(c.spot_check and not c.near for c in white)  # called not a parasite: Reject means a parasitised red cell
    kinds = ["flagged" if not c.spot_check else "white" if c.white else "spot" for c in cells]
    assert kinds == ["flagged"] * 8 + ["white"] * 3 + ["spot"] * SPOT_CHECKS
    assert review_cells(rows, seed="slide-1", white_cells=True) == cells
    # a slide counted with a review block measured without them (an older count) keeps its review as it was
    assert not any(c.white for c in review_cells(rows, seed="slide-1"))


def test_a_white_cell_rejected_is_a_parasitised_red_cell_put_back_into_the_count():
    cells = _cells(2, 1) + [ReviewCell(0, "f", 0, (0, 0, 1, 1), WHITE_CALL, 0.0, True, white=True),
                            ReviewCell(1, "g", 0, (0, 0, 1, 1), WHITE_CALL, 0.0, True, white=True)]
    decisions = {"0:0": "confirm", "0:1": "confirm", "1:0": "confirm", "0:w0": "reject", "1:w0": "confirm"}
    done = _review(cells, decisions, counted=100)
    assert done.status == "reviewed" and done.parasites == 3 and done.cells_counted == 101
    assert done.result.fraction == pytest.approx(3 / 101)
    d = done.as_dict()
    assert (d["white_cells"], d["white_cells_parasitised"], d["spot_checks"], d["spot_checks_parasitised"]) == (2, 1, 1, 0)
    assert d["cells_counted"] == 101
    both_white = _review(cells, {**decisions, "0:w0": "confirm"}, counted=100)
    assert both_white.parasites == 2 and both_white.result.fraction == pytest.approx(2 / 100)


def test_an_enlarged_cell_called_uninfected_is_shown_whatever_its_score():
    rows = _rows(n_fields=2)
    big = next(r for r in rows if r["field"] == "f1.png" and r["label"] == "Uninfected" and r["probability"] < 0.1)
    big["width"] = big["height"] = 13  # 1.69 times its field's median box (10 x 10)
    cells = review_cells(rows, seed="slide-1", enlarged_area=ENLARGED_AREA)
    shown = [c for c in cells if c.kind == "enlarged"]
    assert [(c.field_no, c.cell) for c in shown] == [(1, big["cell"])] and shown[0].spot_check and not shown[0].near
    assert cells.index(shown[0]) < 8 + 1  # among the cells always shown, before the spot checks
    assert len([c for c in cells if c.kind == "spot"]) == SPOT_CHECKS
    done = _review(cells, {c.key: "reject" if c is shown[0] else "confirm" for c in cells})
    d = done.as_dict()
    assert (d["enlarged"], d["enlarged_parasitised"], d["spot_checks_parasitised"]) == (1, 1, 0)
    assert done.parasites == 8 + 1 and done.cells_counted == 1000  # a red cell already counted: only the call changes
    assert not any(c.kind == "enlarged" for c in review_cells(rows, seed="slide-1"))  # counted before: not shown
    big["width"] = big["height"] = 12  # 1.44 times: not enlarged
    assert not any(c.kind == "enlarged" for c in review_cells(rows, seed="slide-1", enlarged_area=ENLARGED_AREA))


def _review(cells, decisions, counted=1000, errors=None):
    return Review(cells, {k: _decision(k, d) for k, d in decisions.items()}, counted, errors)


def _decision(key, decision):
    from edge_app.review import Decision

    return Decision(key, decision, "Dr K", "2026-12-02T10:00:00+00:00")


def _cells(flagged: int, spot: int) -> list[ReviewCell]:
    return ([ReviewCell(0, "f", i, (0, 0, 1, 1), "Parasitized", 0.9, False) for i in range(flagged)]
            + [ReviewCell(1, "g", i, (0, 0, 1, 1), "Uninfected", 0.4, True) for i in range(spot)])


def test_status_goes_counted_in_review_reviewed_and_only_then_is_there_a_reviewed_figure():
    cells = _cells(3, 2)
    assert _review(cells, {}).status == "counted"
    partial = _review(cells, {"0:0": "confirm"})
    assert partial.status == "in review" and partial.result is None
    assert partial.as_dict()["parasitemia"] is None
    done = _review(cells, {"0:0": "confirm", "0:1": "reject", "0:2": "confirm", "1:0": "confirm", "1:1": "reject"})
    assert done.status == "reviewed"
    # two flagged confirmed, one spot-checked cell found parasitised: 3 of 1000
    assert done.parasites == 3
    assert done.result.fraction == pytest.approx(0.003)
    assert done.result.interval == pytest.approx(wilson_interval(3, 1000))
    d = done.as_dict()
    assert (d["flagged_confirmed"], d["flagged_rejected"], d["spot_checks_parasitised"]) == (2, 1, 1)


def test_reviewed_parasitemia_is_corrected_for_missed_cells_only():
    errors = CountingErrors(0.8, 0.01, infected_cells=400, healthy_cells=20000)
    cells = _cells(20, 0)
    decisions = {f"0:{i}": "confirm" if i < 10 else "reject" for i in range(20)}
    result = _review(cells, decisions, counted=1000, errors=errors).result
    assert result.raw_fraction == pytest.approx(0.010)
    assert result.fraction == pytest.approx(0.010 / 0.8)  # no false positives left to subtract: only misses
    automatic = Parasitemia(1000, 10, errors=errors)
    assert automatic.fraction == pytest.approx(0.0)  # 1 % called, all explained by a 1 % false-positive rate
    lo, hi = result.interval
    assert 0 < lo < result.fraction < hi
    # the sensitivity's own uncertainty widens the interval beyond the count's alone, corrected
    w_lo, w_hi = wilson_interval(10, 1000)
    assert hi > w_hi / 0.8 * 0.98 and lo < w_lo / 0.8 * 1.02


def test_an_uncertain_sensitivity_widens_the_reviewed_interval():
    cells = _cells(20, 0)
    decisions = {f"0:{i}": "confirm" for i in range(20)}
    sure = _review(cells, decisions, 2000, CountingErrors(0.8, 0.01, 100000, 100000)).result.interval
    unsure = _review(cells, decisions, 2000, CountingErrors(0.8, 0.01, 100000, 100000, sensitivity_sd=0.2)).result.interval
    assert unsure[1] - unsure[0] > 1.5 * (sure[1] - sure[0])


def test_decisions_are_appended_the_last_one_wins_and_a_torn_line_is_ignored(tmp_path):
    cell = ReviewCell(2, "f.png", 7, (0, 0, 9, 9), "Parasitized", 0.9, False)
    record_decision(tmp_path, cell, "confirm", "Dr K")
    record_decision(tmp_path, cell, "reject", "  Dr M ")
    with open(tmp_path / REVIEW_FILE, "a") as f:
        f.write('{"key": "2:8", "decision": "confirm", "rev')  # a power cut mid-line
    decisions = read_decisions(tmp_path)
    assert list(decisions) == ["2:7"]
    assert decisions["2:7"].decision == "reject" and decisions["2:7"].reviewer == "Dr M"
    lines = (tmp_path / REVIEW_FILE).read_text().splitlines()
    assert json.loads(lines[0])["field"] == "f.png"


@pytest.mark.parametrize("decision, reviewer", [("maybe", "Dr K"), ("confirm", "  ")])
def test_a_decision_needs_confirm_or_reject_and_a_name(tmp_path, decision, reviewer):
    with pytest.raises(ValueError):
        record_decision(tmp_path, ReviewCell(0, "f", 0, (0, 0, 1, 1), "Parasitized", 0.9, False), decision, reviewer)
    assert not (tmp_path / REVIEW_FILE).exists()


def test_a_counted_slide_carries_its_review_in_summary_and_report(tmp_path, tiny_model):
    from edge_app.slide import publish

    out = drawn_slide(tmp_path, tiny_model)
    summary = read_summary(out)
    assert summary["review"]["status"] == "counted" and summary["review"]["flagged"] == 8  # 4 red of 24, 2 fields
    review = slide_review(out, summary)
    for i, c in enumerate(review.cells):
        record_decision(out, c, "reject" if i == 0 else "confirm", "Dr K")
    summary = publish(out)
    assert summary["review"]["status"] == "reviewed"
    assert summary["review"]["parasitemia"] == pytest.approx(7 / 48)
    assert json.loads((out / "summary.json").read_text())["review"] == summary["review"]
    report = (out / "report.html").read_text()
    assert 'id="headline">14.58 %' in report and "reviewed by Dr K: 7 infected cells confirmed in 48" in report
    assert 'id="reviewed">14.58 %' in report and "rejected" in report


def _add_field(tmp_path, n: int) -> None:
    import numpy as np
    from PIL import Image

    from benchmarks.synthetic_fields import compose_field
    from tests.conftest import BLUE, RED, cell

    rng = np.random.default_rng(n)
    cells = [(np.asarray(cell(RED if i % 6 == 0 else BLUE, (44, 50), seed=100 * n + i)), "") for i in range(24)]
    Image.fromarray(compose_field(cells, (400, 560), rng)[0]).save(tmp_path / "slide-fields" / f"later{n}.png")


def test_a_count_resumed_while_a_review_goes_on_loses_no_decision(tmp_path, tiny_model, private_register):
    """`capture --resume` adding fields (here `smear --resume`, the same SlideRun) while `serve` records decisions."""
    import threading

    from click.testing import CliRunner

    from edge_app.cli import main
    from edge_app.register import connect, get_slide, index_slide
    from edge_app.slide import publish

    out = drawn_slide(tmp_path, tiny_model, 2)
    cells = slide_review(out, read_summary(out)).cells
    for n in range(3):
        _add_field(tmp_path, n)
    done = threading.Event()

    def review():
        for c in cells[:10]:
            record_decision(out, c, "confirm", "Dr K")
            publish(out)
        done.set()

    reviewer = threading.Thread(target=review)
    reviewer.start()
    res = CliRunner().invoke(main, ["smear", str(tmp_path / "slide-fields"), "--out", str(out), "--model",
                                    str(tiny_model), "--segmenter", "classical", "--resume"])
    reviewer.join(60)
    assert res.exit_code == 0 and done.is_set(), res.output
    summary = read_summary(out)  # whichever wrote it last, it has every field and every decision
    assert summary["total"]["cells"] == 5 * 24 and len(read_decisions(out)) == 10
    assert summary["review"]["decided"] == 10 and summary["review"]["flagged"] == 5 * 4
    index_slide(connect(private_register), out)
    assert get_slide(connect(private_register), summary["id"])["review_decided"] == 10


def test_counting_a_slide_afresh_starts_its_review_afresh(tmp_path, tiny_model):
    from click.testing import CliRunner

    from edge_app.cli import main

    out = drawn_slide(tmp_path, tiny_model, 1)
    record_decision(out, slide_review(out, read_summary(out)).cells[0], "reject", "Dr K")
    res = CliRunner().invoke(main, ["smear", str(tmp_path / "slide-fields"), "--out", str(out), "--model",
                                    str(tiny_model), "--segmenter", "classical", "--overwrite"])
    assert res.exit_code == 0
    assert read_decisions(out) == {} and read_summary(out)["review"]["status"] == "counted"


def test_with_a_review_threshold_every_uninfected_call_above_it_is_shown_and_spot_checks_come_from_below():
    rows = _rows()  # Parasitized at 0.9; Uninfected cell c of a field at c / 80
    cells = review_cells(rows, seed="slide-1", threshold=0.4)
    near = [c for c in cells if c.near]
    assert len(near) == 3 * 8 and all(c.call == "Uninfected" and c.spot_check and c.probability >= 0.4 for c in near)
    uninfected_above = [r for r in rows if r["label"] == "Uninfected" and r["probability"] >= 0.4]
    assert len(near) == len(uninfected_above)  # every one of them, none sampled away
    assert len([c for c in cells if not c.spot_check]) == 12
    spot = [c for c in cells if c.spot_check and not c.near]
    assert len(spot) == SPOT_CHECKS and all(c.probability < 0.4 for c in spot)
    assert review_cells(rows, seed="slide-1", threshold=0.4) == cells
    # Without a review threshold nothing is "near": the flagged cells and the spot checks, as before.
    assert not any(c.near for c in review_cells(rows, seed="slide-1"))


def test_a_rejected_uninfected_call_near_the_threshold_is_a_parasite_and_is_counted_apart():
    cells = _cells(2, 0) + [ReviewCell(1, "g", i, (0, 0, 1, 1), "Uninfected", 0.45, True, near=True) for i in range(3)] \
        + [ReviewCell(2, "h", 0, (0, 0, 1, 1), "Uninfected", 0.2, True)]
    errors = CountingErrors(0.95, 0.05, infected_cells=150, healthy_cells=10000)
    done = _review(cells, {"0:0": "confirm", "0:1": "reject", "1:0": "reject", "1:1": "confirm", "1:2": "reject",
                           "2:0": "confirm"}, counted=500, errors=errors)
    assert done.parasites == 3  # one Parasitized call confirmed, two near-threshold cells found parasitised
    assert done.result.fraction == pytest.approx(3 / 500 / 0.95)  # corrected for what the review threshold misses only
    d = done.as_dict()
    assert (d["flagged"], d["near_threshold"], d["spot_checks"]) == (2, 3, 1)
    assert (d["near_threshold_parasitised"], d["spot_checks_parasitised"]) == (2, 0)


def test_a_slide_counted_with_a_review_threshold_shows_the_cells_above_it_and_corrects_for_its_sensitivity(tmp_path, model_copy):
    from edge_app.slide import publish

    side = model_copy.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["counting"] = {"threshold": 0.5, "sensitivity": 0.8, "false_positive_rate": 0.01}
    meta["review"] = {"threshold": 0.0, "sensitivity": 0.96, "false_positive_rate": 0.2, "infected_cells": 100,
                      "healthy_cells": 5000}
    side.write_text(json.dumps(meta))
    out = drawn_slide(tmp_path, model_copy)
    summary = read_summary(out)
    assert summary["review_from"]["threshold"] == 0.0 and summary["review_from"]["corrected_for"]["sensitivity"] == 0.96
    review = slide_review(out, summary)
    assert summary["review"]["flagged"] == 8 and summary["review"]["near_threshold"] == 40  # every cell shown at 0
    assert summary["review"]["spot_checks"] == 0 and len(review.cells) == 48
    for c in review.cells:
        record_decision(out, c, "confirm", "Dr K")
    summary = publish(out)
    assert summary["review"]["status"] == "reviewed"
    assert summary["review"]["parasitemia"] == pytest.approx(8 / 48 / 0.96)
    assert summary["review"]["corrected_for_missed"]["sensitivity"] == 0.96
