"""The real-field benchmark end to end on a few real annotated fields (skipped without ../shared/datasets/iml_malaria)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import REPO

IML = REPO.parent / "shared" / "datasets" / "iml_malaria"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not (IML / "annotations.json").is_file(), reason="needs ../shared/datasets/iml_malaria")]


def test_benchmark_scores_the_shipped_pipeline_on_real_fields(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from benchmarks.real_fields import ORACLE, main

    out = tmp_path / "real.json"
    assert main(["--data", str(IML), "--run", "0", "--first", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    run = report["runs"]["0"]
    assert run["fields"] == 4 and run["cells"] > 300
    # the shipped detector finds the red cells of these (training) fields; precision is a lower bound (unboxed cells)
    assert run["recall"] >= 0.9 and run["precision"] >= 0.7
    assert report["classifier_alone"]["roc_auc"] > 0.8
    oracle = report["classifier_alone"]["at"][ORACLE]  # set on these very healthy cells: at most 1 % called Parasitized
    assert oracle["healthy_called_parasitized"] <= 0.01 and 0 <= oracle["sensitivity"] <= 1
    assert 0 <= run["infected_unboxed"] <= run["infected"] and 0 <= run["called_parasitized_off_boxes"] <= run["detections"]
    # the shipped model's review threshold is below its counting one, so the reviewer is shown every cell counted and more
    assert run["reviewed"]["threshold"] < report["threshold"] and run["reviewed"]["cells_shown"] >= run["detections"] * 0.01
    assert "red cells: recall" in capsys.readouterr().out


def test_audit_draws_the_parasitized_calls_on_no_box(tmp_path, capsys):
    """Every detection far from the boxes that is called Parasitized is drawn for sorting by eye (none are sampled away)."""
    from PIL import Image

    from benchmarks.unmatched_audit import main

    main(["--data", str(IML), "--run", "1", "--detector", str(REPO / "models" / "cell-detector-int8.tflite"),
          "--called-parasitized", "--out", str(tmp_path / "calls.png")])
    out = capsys.readouterr().out
    drawn = int(out.splitlines()[-1].split()[0])
    far = int(out.split("far ")[1].split()[0].replace(",", ""))
    assert 0 <= drawn <= far
    if drawn:
        assert Image.open(tmp_path / "calls.png").size[0] == 10 * 100


def test_audit_draws_the_healthy_boxes_called_parasitized(tmp_path, capsys):
    """Every detection on a box labelled healthy that is called Parasitized is drawn, for a microscopist to check the
    labels: as many as the benchmark counts as healthy cells called Parasitized on that run, with the same models."""
    from PIL import Image

    from benchmarks.real_fields import score_counted
    from benchmarks.unmatched_audit import main
    from edge_app.detect import CellDetector
    from edge_app.model import ModelBundle, default_model_path
    from training.fields import count_fields, load_annotations, runs_of

    detector = REPO / "models" / "cell-detector-int8.tflite"
    main(["--data", str(IML), "--run", "1", "--detector", str(detector), "--healthy-called-parasitized",
          "--out", str(tmp_path / "healthy.png")])
    drawn = int(capsys.readouterr().out.splitlines()[-1].split()[0])
    annotations = load_annotations(IML / "annotations.json")
    model = ModelBundle(default_model_path())
    counted = count_fields(model, CellDetector(detector), IML, runs_of(sorted(annotations))[1])
    assert drawn == sum(s.healthy_called_parasitized for s in score_counted(counted, annotations, model.counting.threshold))
    if drawn:
        assert Image.open(tmp_path / "healthy.png").size[0] == 10 * 100


def test_the_white_cell_of_the_issue_is_not_counted():
    """PA171710.JPG's neutrophil, which release 3 counted as a parasitised red cell (its two-lobed nucleus spans about
    x 824-919, y 94-209, read off the image by eye): the shipped detector boxes its lobes, the app leaves them out."""
    from edge_app.detect import CellDetector, default_detector_path
    from edge_app.preprocess import load_rgb
    from edge_app.smear import find_cells

    rgb = load_rgb(IML / "images" / "PA171710.JPG")
    detector = CellDetector(default_detector_path())

    def on_nucleus(x, y, w, h):
        return 820 <= x + w / 2 <= 925 and 90 <= y + h / 2 <= 212

    assert any(on_nucleus(d.x, d.y, d.width, d.height) for d in detector.detect(rgb))
    cells = find_cells(rgb, detector)
    assert len(cells) > 100 and not any(on_nucleus(c.x, c.y, c.width, c.height) for c in cells)


def test_an_enlarged_gametocyte_is_boxed():
    """PA171828.JPG's P. vivax gametocyte (annotated at x 542, y 186, 89 x 116 px, larger than the field's red cells),
    which the first shipped detector scored just under its threshold and kept only by the large-cell margin
    (tests/test_detect.py tests that margin), is boxed by the shipped detector."""
    import edge_app.detect as detect
    from edge_app.preprocess import load_rgb
    from training.fields import iou_matrix, load_annotations

    rgb = load_rgb(IML / "images" / "PA171828.JPG")
    gametocyte = [b for b in load_annotations(IML / "annotations.json")["PA171828.JPG"] if b.kind == "gametocyte"
                  and (b.x, b.y) == (542, 186)]
    assert len(gametocyte) == 1
    truth = np.array([[b.x, b.y, b.w, b.h] for b in gametocyte], float)
    found = detect.CellDetector(detect.default_detector_path()).detect(rgb)
    assert iou_matrix(truth, np.array([[d.x, d.y, d.width, d.height] for d in found], float).reshape(-1, 4)).max() >= 0.3


@pytest.mark.parametrize("zoom, run", [(0.5, 1), (2.0, 2), ((2560, 1440), 1)])
def test_fields_at_another_magnification_are_found_as_at_the_trained_one(zoom, run):
    """Real fields made to look photographed at half or twice the magnification, or with a larger frame
    (benchmarks/magnification.py): at the default scale the shipped detector finds under half of their cells; following
    the cells' size, nearly as many as at 1x (the zoomed-in fields have more cells cut by the border)."""
    pytest.importorskip("scipy")
    from benchmarks.magnification import framed_fields, zoomed_fields
    from edge_app.detect import CellDetector
    from training.fields import load_annotations, pooled, runs_of, score_field

    annotations = load_annotations(IML / "annotations.json")
    names = runs_of(sorted(annotations))[run][:4]
    detector = CellDetector(REPO / "models" / "cell-detector-int8.tflite")
    recall = {}
    for passes in (1, 4):
        scores = []
        for _, field, truth in (framed_fields if isinstance(zoom, tuple) else zoomed_fields)(IML, names, annotations, zoom):
            found = detector.detect(field, passes=passes)
            boxes = np.array([[d.x, d.y, d.width, d.height] for d in found], float).reshape(-1, 4)
            scores.append(score_field(truth, boxes, np.zeros(len(boxes), bool)))
        p = pooled(scores)
        recall[passes] = p.matched / p.cells
    assert recall[1] < 0.5 and recall[4] >= 0.85
