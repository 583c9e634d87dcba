"""A laboratory's calibration (edge_app.calibration): reviews update it, the next count of a matching stain uses it, a
stain unlike it falls back to the shipped rates, a reset starts it afresh, and the register keeps it across migrations
and rebuilds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge_app.calibration import Calibration, Evidence, chromaticity
from edge_app.cli import main
from edge_app.parasitemia import CountingErrors
from edge_app.register import connect, rebuild, site_calibration
from edge_app.review import record_decision
from edge_app.slide import read_summary, slide_review
from tests.conftest import drawn_slide

SHIPPED = CountingErrors(0.70, 0.010, 159, 13_371, sensitivity_sd=0.20, false_positive_rate_sd=0.0054)


def _slide(i: int, fp: int = 12, healthy: int = 1_200, parasites: int = 12, flagged: int = 4, stain=(150, 110, 135)):
    return Evidence(f"s{i}", f"2026-12-0{i + 1}T10:00:00+00:00", "sha", 0.74, healthy + parasites, flagged + fp, fp,
                    parasites, flagged, stain)


def test_the_laboratorys_rates_move_from_the_prior_to_its_reviews_with_the_drift_between_slides_kept():
    """Its stain calls a third of the shown infected cells (the shipped rates say 0.77) and 1 % false positives: the
    laboratory's sensitivity moves down towards it slide after slide, and its interval never gets narrower than the
    drift from one slide to the next allows, however many are reviewed."""
    from edge_app.calibration import FALSE_POSITIVE_DRIFT, SENSITIVITY_DRIFT

    none = Calibration((), SHIPPED, 0.91)
    assert none.errors().sensitivity == pytest.approx(SHIPPED.sensitivity, abs=1e-9)
    sensitivities = []
    for n in (1, 3, 6):
        e = Calibration(tuple(_slide(i) for i in range(n)), SHIPPED, 0.91).errors()
        assert e.sensitivity_sd >= SENSITIVITY_DRIFT * 0.91 - 1e-9 and e.false_positive_rate_sd >= FALSE_POSITIVE_DRIFT - 1e-9
        sensitivities.append(e.sensitivity)
    assert sensitivities[0] > sensitivities[1] > sensitivities[2] > 0.91 / 3 * 0.9
    wide = Calibration(tuple(_slide(i) for i in range(6)), SHIPPED, 0.91).errors(fields=20)
    assert wide.false_positive_rate_sd == pytest.approx(FALSE_POSITIVE_DRIFT / 2)  # a slide of 20 fields averages it out


def test_a_stain_unlike_the_reviewed_slides_does_not_match():
    cal = Calibration((_slide(0), _slide(1, stain=(160, 118, 146))), SHIPPED, 0.91)  # one stain, a brighter lamp
    assert cal.matches((140, 102, 126))  # the same stain, dimmer
    assert not cal.matches((130, 40, 104))  # a heavy magenta stain
    assert not cal.matches(None) and not Calibration((), SHIPPED, 0.91).matches((150, 110, 135))
    assert chromaticity((100, 100, 200)) == pytest.approx((0.25, 0.25, 0.5))


@pytest.fixture
def calibrated_model(model_copy):
    """The tiny model with measured counting and review blocks, as the shipped classifier's sidecar has them."""
    side = model_copy.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["counting"] = {"threshold": 0.5, "sensitivity": 0.7, "false_positive_rate": 0.01, "infected_cells": 159,
                        "healthy_cells": 13371, "sensitivity_sd": 0.2, "false_positive_rate_sd": 0.005}
    meta["review"] = {"threshold": 0.5, "sensitivity": 0.9, "false_positive_rate": 0.05, "infected_cells": 159,
                      "healthy_cells": 13371}
    side.write_text(json.dumps(meta))
    return model_copy


def _review_all(slide, wrong_flags: int) -> None:
    """A microscopist who rejects the first `wrong_flags` flagged cells and agrees with every other call."""
    review = slide_review(slide, read_summary(slide))
    for i, c in enumerate(review.cells):
        record_decision(slide, c, "reject" if c.kind == "flagged" and i < wrong_flags else "confirm", "Dr K")
    from edge_app.register import index_slide
    from edge_app.slide import publish

    publish(slide)
    index_slide(connect(), slide)


def test_a_review_calibrates_the_next_count_and_a_reset_forgets_it(tmp_path, calibrated_model, private_register):
    first = drawn_slide(tmp_path, calibrated_model, 2, name="first")
    calibration = read_summary(first)["calibration"]
    assert not calibration["used"] and calibration["why"] == "no slide of this laboratory fully reviewed yet"
    _review_all(first, wrong_flags=2)
    cal = site_calibration(connect(), _bundle(calibrated_model))
    assert len(cal.slides) == 1 and cal.slides[0].flagged_rejected == 2 and cal.slides[0].parasites == 6
    second = drawn_slide(tmp_path, calibrated_model, 2, name="second")
    summary = read_summary(second)
    assert summary["calibration"]["used"] and summary["calibration"]["slides"] == 1
    assert summary["total"]["corrected_for"]["false_positive_rate"] != pytest.approx(0.01)
    assert "this laboratory&#x27;s own error rates, from 1 reviewed slides" in (second / "report.html").read_text()
    shown = CliRunner().invoke(main, ["calibration", "show", "--model", str(calibrated_model)])
    assert shown.exit_code == 0 and "1 slide reviewed since" in shown.output and "6 parasites confirmed" in shown.output
    assert CliRunner().invoke(main, ["calibration", "reset"]).exit_code == 0
    third = drawn_slide(tmp_path, calibrated_model, 2, name="third")
    assert not read_summary(third)["calibration"]["used"]
    assert "none yet" in CliRunner().invoke(main, ["calibration", "show", "--model", str(calibrated_model)]).output


def test_a_slide_of_another_stain_falls_back_to_the_shipped_rates(tmp_path, calibrated_model, private_register):
    from PIL import Image

    first = drawn_slide(tmp_path, calibrated_model, 2, name="first")
    _review_all(first, wrong_flags=0)
    fields = tmp_path / "other-fields"
    fields.mkdir()
    for f in (tmp_path / "first-fields").glob("*.png"):  # the same cells under a green-blue stain
        rgb = np.asarray(Image.open(f)).astype(float)
        Image.fromarray(np.clip(rgb * (0.6, 1.1, 1.2), 0, 255).astype(np.uint8)).save(fields / f.name)
    res = CliRunner().invoke(main, ["smear", str(fields), "--out", str(tmp_path / "other"), "--model", str(calibrated_model),
                                    "--segmenter", "classical"])
    assert res.exit_code == 0, res.output
    summary = read_summary(tmp_path / "other")
    assert not summary["calibration"]["used"] and "stain is unlike" in summary["calibration"]["why"]
    assert summary["total"]["corrected_for"]["false_positive_rate"] == pytest.approx(0.01)
    assert "no calibration of this laboratory: this slide&#x27;s stain is unlike" in (tmp_path / "other" / "report.html").read_text()


def test_rebuild_remakes_the_calibration_from_the_slide_folders(tmp_path, calibrated_model, private_register):
    first = drawn_slide(tmp_path, calibrated_model, 2, name="first")
    _review_all(first, wrong_flags=1)
    before = site_calibration(connect(), _bundle(calibrated_model)).slides
    private_register.unlink()  # the register is lost; the folders are the record
    rebuild(connect(), [tmp_path])
    assert site_calibration(connect(), _bundle(calibrated_model)).slides == before


def _bundle(path):
    from edge_app.model import ModelBundle

    return ModelBundle(path)
