"""Stain matching: a field's overall shade is taken to the training cells' colour; differences between its cells stay."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.synthetic_fields import compose_field
from edge_app.model import ModelBundle, ModelError, update_sidecar
from edge_app.preprocess import fit_square
from edge_app.smear import analyse_field, classify_cells, find_cells
from edge_app.stain import MAX_GAIN, cell_colour, match_stain, stain_gains
from tests.conftest import BLUE, RED, cell


def test_cell_colour_ignores_the_black_background():
    crop = np.zeros((10, 10, 3), np.uint8)
    crop[2:8, 2:8] = (180, 140, 150)
    assert cell_colour(crop).tolist() == [180, 140, 150]
    assert cell_colour([crop, crop[:5]]).tolist() == [180, 140, 150]
    assert cell_colour(np.zeros((4, 4, 3), np.uint8)) is None
    assert cell_colour([]) is None


def test_a_field_is_taken_to_the_reference_and_its_cells_keep_their_differences():
    cells = np.zeros((3, 8, 8, 3), np.uint8)
    cells[0, 2:6, 2:6] = (120, 80, 100)
    cells[1, 2:6, 2:6] = (120, 80, 100)
    cells[2, 2:6, 2:6] = (60, 40, 100)  # a darker cell: half as red and green as its neighbours
    out = match_stain(cells, (180, 160, 150))
    assert out[0, 3, 3].tolist() == [180, 160, 150]
    assert out[2, 3, 3].tolist() == [90, 80, 150]
    assert (out[:, 0, 0] == 0).all()  # black stays black


def test_gains_are_capped_for_a_field_unlike_any_smear():
    cells = np.zeros((1, 4, 4, 3), np.uint8)
    cells[0, 1:3, 1:3] = (10, 200, 200)
    assert stain_gains(cells, (200, 200, 200)).tolist() == [MAX_GAIN, 1.0, 1.0]
    assert stain_gains(np.zeros((1, 4, 4, 3), np.uint8), (200, 200, 200)).tolist() == [1.0, 1.0, 1.0]


def test_a_recoloured_field_is_counted_as_the_original(model_copy):
    """A stain that makes every healthy cell look redder (the tiny model's 'parasite') must not change the calls."""
    rng = np.random.default_rng(0)
    cells = [(np.asarray(cell(RED if i % 8 == 0 else BLUE, (44, 50), seed=i)), "") for i in range(40)]
    field, _ = compose_field(cells, (400, 600), rng)
    tinted = np.clip(field * np.array([2.5, 1.0, 0.4]), 0, 255).astype(np.uint8)  # green unchanged: same cells found
    plain = ModelBundle(model_copy)
    original = [r.label for r in analyse_field(plain, field)]
    assert original.count("Parasitized") == 5
    assert [r.label for r in analyse_field(plain, tinted)].count("Parasitized") > 30  # without matching
    training_colour = cell_colour(np.stack([fit_square(c.crop, plain.input.size, plain.fit) for c in find_cells(field)]))
    update_sidecar(model_copy, "stain", {"cell_colour": training_colour.tolist()})
    matched = ModelBundle(model_copy)
    assert [r.label for r in classify_cells(matched, find_cells(tinted))] == original


@pytest.mark.parametrize("block", [{"cell_colour": [1, 2]}, {"cell_colour": [0, 100, 100]}, {"colour": [1, 2, 3]}, "red"])
def test_a_bad_stain_block_is_refused(model_copy, block):
    update_sidecar(model_copy, "stain", block)
    with pytest.raises(ModelError, match="stain block"):
        ModelBundle(model_copy)


def test_the_stain_command_records_the_training_patients_cell_colour(model_copy, tmp_path):
    """`malaria-quantize stain` measures only training patients' cells: test patients' colour must not reach the sidecar."""
    pytest.importorskip("sklearn")
    from click.testing import CliRunner

    from quantization.cli import main
    from training.data import discover, split_by_patient

    data = tmp_path / "cell_images"
    for label in ("Parasitized", "Uninfected"):
        (data / label).mkdir(parents=True)
    for p in range(10):
        for i in range(2):
            cell((100 + 10 * p, 80, 90), seed=i).save(data / ("Parasitized" if i else "Uninfected") / f"C{p}P{p}thinF_IMG_{i}_cell_{i}.png")
    split = split_by_patient(discover(data), seed=0)
    res = CliRunner().invoke(main, ["stain", str(model_copy), "--data", str(data)])
    assert res.exit_code == 0, res.output
    block = ModelBundle(model_copy).meta["stain"]
    train_reds = sorted(100 + 10 * int(p[1:p.index("P")]) for p in split.train)
    assert train_reds[0] - 10 <= block["cell_colour"][0] <= train_reds[-1] + 10
    assert f"{len(split.train)} training patients" in block["measured_on"]
    assert ModelBundle(model_copy).cell_colour == tuple(block["cell_colour"])
