"""The one figure a slide reports (edge_app.headline): never a bare 0.00 % while cells are flagged; negative slides
read as negative with their upper bound; the reviewed figure first once it exists."""

from __future__ import annotations

from edge_app.headline import headline, list_figure, running_text
from edge_app.parasitemia import CountingErrors, Parasitemia

SHIPPED = CountingErrors(0.742, 0.00995, 159, 13_371, sensitivity_sd=0.252, false_positive_rate_sd=0.0054)


def test_flagged_cells_never_read_as_a_bare_zero():
    """Reproduces: "parasitemia 0.00 % (95 % CI 0.00-27.19 %)" for 44 cells flagged of 5,100 (truth 1.06 %)."""
    total = Parasitemia(5_100, 44, errors=SHIPPED)
    head = headline(total)
    # No more flagged than false positives alone give, yet a 1 % slide cannot be ruled out: not called negative.
    assert total.fraction == 0 and total.interval[1] > 0.01
    assert head.kind == "flagged" and head.figure == "44 flagged" and "0.00 %" not in head.text
    assert "44 of 5,100 cells flagged" in head.text and "awaits a microscopist's review" in head.text
    assert f"up to {100 * total.interval[1]:.2f} % cannot be ruled out" in head.text
    many = headline(Parasitemia(5_100, 120, errors=SHIPPED))
    assert many.kind == "flagged" and many.figure == "120 flagged" and "awaits a microscopist's review" in many.text
    assert "automatic estimate" in many.text


def test_a_slide_with_no_more_flagged_than_false_positives_reads_as_likely_negative_with_its_upper_bound():
    """The other laboratory's slide of no malaria, counted as one (15 of 10,134 flagged): negative, at most under 1 %."""
    total = Parasitemia(10_134, 15, errors=SHIPPED)
    head = headline(total)
    assert head.kind == "likely negative" and "at most 0." in head.text and total.interval[1] < 0.01
    none = headline(Parasitemia(7_854, 0, errors=SHIPPED))
    assert none.figure == "none flagged" and "likely negative, at most 0." in none.text


def test_too_few_cells_are_never_called_negative():
    few = Parasitemia(300, 0, errors=SHIPPED)
    head = headline(few)
    assert few.interval[1] > 0.01 and head.figure == "none flagged" and "negative" not in head.text
    assert f"too few to rule out up to {100 * few.interval[1]:.2f} %" in head.text and "count more fields" in head.text


def test_the_reviewed_figure_comes_first_once_reviewed_and_a_negative_review_says_so():
    total = Parasitemia(4_000, 30, errors=SHIPPED)
    review = {"status": "reviewed", "parasitemia": 0.006, "ci95": [0.004, 0.009], "cells_counted": 4_000,
              "confirmed_parasitised": 24, "reviewers": ["Dr K"], "decided": 40, "cells_to_review": 40}
    head = headline(total, review)
    assert head.kind == "reviewed" and head.figure == "0.60 %" and "reviewed by Dr K: 24 infected cells confirmed" in head.text
    negative = headline(total, {**review, "parasitemia": 0.0, "ci95": [0.0, 0.0009], "confirmed_parasitised": 0})
    assert negative.figure == "negative" and "no parasite seen in 4,000 cells reviewed by Dr K; at most 0.09 %" in negative.text
    halfway = headline(total, {**review, "status": "in review", "parasitemia": None, "decided": 12})
    assert halfway.kind in ("flagged", "likely negative") and "review: 12 of 40 cells decided" in halfway.text


def test_lists_and_the_running_line_say_the_same():
    assert list_figure({"status": "reviewed", "reviewed_parasitemia": 0.0123, "cells": 9, "parasitized": 1}) == "1.23 %"
    assert list_figure({"status": "reviewed", "reviewed_parasitemia": 0.0, "cells": 9, "parasitized": 1}) == "negative"
    assert list_figure({"status": "counted", "reviewed_parasitemia": None, "cells": 900, "parasitized": 11}) == "11 flagged"
    assert running_text(Parasitemia(634, 11, errors=SHIPPED)) == "11 of 634 cells flagged (1.74 %)"
