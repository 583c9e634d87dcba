import json

import numpy as np
from PIL import Image

from benchmarks.rescoring_cost import main
from benchmarks.synthetic_fields import compose_field
from edge_app import smear
from tests.conftest import BLUE, RED, cell


def test_the_rescoring_benchmark_times_both_ways_and_leaves_the_floor_as_shipped(tmp_path, capsys):
    rng = np.random.default_rng(3)
    for i in range(2):
        cells = [(np.asarray(cell(RED if j % 4 == 0 else BLUE, (44, 50), seed=j)), "x") for j in range(25)]
        field, _ = compose_field(cells, (360, 480), rng)
        Image.fromarray(field).save(tmp_path / f"field{i}.png")
    shipped = smear.RESCORE_FLOOR
    assert main(["--images", str(tmp_path / "*.png"), "--fields", "2", "--repeats", "1", "--json", str(tmp_path / "out.json")]) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["fields"] == 2 and report["cells"] > 20
    assert 0 <= report["cells_rescored"] <= 1 and report["shipped_s_a_field"] > 0 and report["two_views_s_a_field"] > 0
    assert report["ratio"] == report["shipped_s_a_field"] / report["two_views_s_a_field"]
    assert smear.RESCORE_FLOOR == shipped  # restored after the two-view rounds
    assert "classified in 8 views" in capsys.readouterr().out
