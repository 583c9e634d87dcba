"""The threshold for counting cells on a smear, and the model's error rates there.

Screening wants high sensitivity (the model's own threshold); counting wants
few false positives, because at a parasitemia of 1 % every healthy cell
called infected is a large error. The threshold is chosen on the validation
patients for a false-positive rate at most `max_fpr`, and the sensitivity and
false-positive rate measured there go into the sidecar, where the app uses
them to correct the parasitemia (edge_app.parasitemia).

Measured on real fields, a second, lower threshold goes beside it (the
sidecar's "review" block): the cells a microscopist is shown. Once a person
has confirmed or rejected each, no false positive is left, and what remains
to correct for is the sensitivity at that threshold. A low threshold's
sensitivity changes far less from stain to stain than a high one's, and
the false-positive rate, which changes most, is gone: on real fields the
reviewed parasitemia carries over to unseen stains where the automatic one
does not (models/DETAILS.md, "The review threshold").
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from edge_app.model import REVIEW_BLOCK, update_sidecar
from edge_app.parasitemia import CountingErrors

#: The review threshold's default share: a reviewer is shown at most 5 % of the detections that are not infected cells
#: (on the real fields, about 7-9 cells a field), for a sensitivity near its ceiling on every stain (models/DETAILS.md).
REVIEW_FPR = 0.05


def counting_threshold(y: np.ndarray, p: np.ndarray, max_fpr: float) -> dict[str, float]:
    """The lowest threshold at which at most `max_fpr` of the healthy cells score at or above it, and the rates there."""
    healthy, infected = np.sort(p[y == 0])[::-1], p[y == 1]
    if not len(healthy) or not len(infected):
        raise ValueError("need both healthy and infected cells to measure error rates")
    allowed = int(np.floor(max_fpr * len(healthy)))
    threshold = float(np.nextafter(healthy[allowed], np.inf)) if allowed < len(healthy) else 0.0
    return {"threshold": threshold, "sensitivity": float(np.mean(infected >= threshold)),
            "false_positive_rate": float(np.mean(healthy >= threshold)),
            "infected_cells": int(len(infected)), "healthy_cells": int(len(healthy))}


def add_counting(tflite: str | Path, x: np.ndarray, y: np.ndarray, max_fpr: float, measured_on: str) -> dict | None:
    """Measure on (x, y) with the bundle as the app runs it and write the "counting" block into its sidecar.

    A model no better than chance there (sensitivity not above the
    false-positive rate) gets no block, and None is returned: its smear
    counts stay raw rather than being "corrected" by meaningless rates.
    A review threshold measured earlier on real fields goes with the old
    counting block: the two are measured together, on the same cells.
    """
    from quantization.score import bundle_probabilities  # scikit-learn: not for the app-only install's `--help`

    p, _ = bundle_probabilities(tflite, x)
    update_sidecar(tflite, REVIEW_BLOCK, None)
    return write_counting(tflite, {**counting_threshold(y, p, max_fpr), "max_false_positive_rate": max_fpr,
                                   "measured_on": measured_on})


def write_field_counting(tflite: str | Path, scores: list[tuple[np.ndarray, np.ndarray]], max_fpr: float, review_fpr: float,
                         about: dict, review_scores: list[tuple[np.ndarray, np.ndarray]] | None = None,
                         shows: Mapping | None = None) -> tuple[dict | None, dict | None]:
    """Choose and store the counting and review thresholds and the rates there, from the pipeline's scores on real fields.

    `scores`: per run of fields, the P(Parasitized) of the detections that
    are not infected cells and each infected cell's best P (`field_scores`,
    training.fields.counting_scores), from fields whose cells the models
    never saw; `review_scores` the same with the cells the review `shows`
    whatever their score at 1 (training.fields.review_scores; `scores`, and
    nothing shown so, when not given). The counting threshold is the lowest
    at which at most `max_fpr` of those detections are called Parasitized,
    the review threshold the lowest for `review_fpr` (the share of them a
    reviewer is shown besides), with its sensitivity from `review_scores`
    (`pooled_review`); the review block records `shows`, so that the app
    shows what the sensitivity was measured showing. `about` (what they
    were measured on) goes into both blocks. Returns the blocks written
    (None: not written, rates no better than chance; no review without a
    counting block).
    """
    check_review_share(max_fpr, review_fpr)
    if (review_scores is None) != (shows is None):
        raise ValueError("review scores and what the review shows go together")
    counting = write_counting(tflite, {**pooled_counting(scores, max_fpr), "max_false_positive_rate": max_fpr, **about})
    review = None
    if counting is not None:
        review = write_counting(tflite, {**pooled_review(scores, review_scores or scores, review_fpr),
                                         "max_false_positive_rate": review_fpr, **(shows or {}), **about}, REVIEW_BLOCK)
    else:
        update_sidecar(tflite, REVIEW_BLOCK, None)
    return counting, review


def check_review_share(max_fpr: float, review_fpr: float) -> None:
    """A review shows every cell counted, so its share of other detections cannot be below counting's (ValueError)."""
    if review_fpr < max_fpr:
        raise ValueError(f"the review must show at least the cells counted: review share {review_fpr} < counting share {max_fpr}")


def pooled_counting(scores: list[tuple[np.ndarray, np.ndarray]], max_fpr: float) -> dict[str, float]:
    """The counting threshold and rates over several sets of (other detections' P, infected cells' best P).

    With more than one set (runs of differently stained fields), the rates'
    standard deviations between the sets at that threshold are added, so
    the app's interval can carry how much they change from stain to stain.
    """
    healthy_p = np.concatenate([h for h, _ in scores])
    infected_p = np.concatenate([i for _, i in scores])
    y = np.concatenate([np.zeros(len(healthy_p)), np.ones(len(infected_p))])
    block = counting_threshold(y, np.concatenate([healthy_p, infected_p]), max_fpr)
    usable = [(h, i) for h, i in scores if len(h) and len(i)]
    if len(usable) > 1:
        t = block["threshold"]
        block["sensitivity_sd"] = float(np.std([np.mean(i >= t) for _, i in usable], ddof=1))
        block["false_positive_rate_sd"] = float(np.std([np.mean(h >= t) for h, _ in usable], ddof=1))
        block["runs"] = len(usable)
    return block


def pooled_review(scores: list[tuple[np.ndarray, np.ndarray]], shown: list[tuple[np.ndarray, np.ndarray]],
                  review_fpr: float) -> dict[str, float]:
    """The review threshold, chosen on the cells' own scores as `pooled_counting` chooses it (at most `review_fpr` of
    the other detections at or above it), with its sensitivity measured on `shown`: the same infected cells, those
    the review shows whatever their score at 1 (training.fields.review_scores).

    The cells always shown are on top of the share, not within it, so a
    field of many enlarged cells does not push the threshold up.
    """
    block = pooled_counting(scores, review_fpr)
    t = block["threshold"]
    infected = [i for _, i in shown]
    block["sensitivity"] = float(np.mean(np.concatenate(infected) >= t))
    usable = [i for (h, _), (_, i) in zip(scores, shown) if len(h) and len(i)]
    if "sensitivity_sd" in block and len(usable) > 1:
        block["sensitivity_sd"] = float(np.std([np.mean(i >= t) for i in usable], ddof=1))
    return block


def field_scores(model, detector, data: str | Path, names: list[str], shows: Mapping
                 ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """P(Parasitized) of the detections that are not infected cells, and each infected cell's best P, on these fields
    counted as `smear` counts them (training.fields.count_fields): for counting, and for a review that `shows` some
    cells whatever their score (those scoring 1; training.fields.review_scores)."""
    from training.fields import count_fields, counting_scores, load_annotations, review_scores

    annotations = load_annotations(Path(data) / "annotations.json")
    counted = count_fields(model, detector, data, names)
    counting = [counting_scores(annotations[c.name], c.boxes, c.probabilities) for c in counted]
    review = [review_scores(annotations[c.name], c.boxes, c.probabilities, c.white, shows) for c in counted]
    return tuple((np.concatenate([h for h, _ in per]), np.concatenate([i for _, i in per])) for per in (counting, review))


def write_counting(tflite: str | Path, block: dict, key: str = "counting") -> dict | None:
    """Write a "counting" (or "review") block into a bundle's sidecar (or remove it, returning None, for rates no better
    than chance)."""
    try:
        CountingErrors(block["sensitivity"], block["false_positive_rate"])
    except ValueError:
        block = None
    update_sidecar(tflite, key, block)
    return block
