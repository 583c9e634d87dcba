import numpy as np

from edge_app.classify import classify_stream
from edge_app.model import ModelBundle
from edge_app.sources import Decoded
from tests.conftest import TINY_SIZE


class RecordingWriter:
    def __init__(self):
        self.batches = []

    def write(self, rows):
        self.batches.append(list(rows))


def test_first_result_comes_alone_then_full_batches_in_input_order(tiny_model):
    rng = np.random.default_rng(0)
    items = [Decoded(f"img{i}", rng.integers(0, 256, (TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)) for i in range(20)]
    items[5] = Decoded("img5", None, "not an image")
    writer = RecordingWriter()
    summary = classify_stream(ModelBundle(tiny_model), items, writer, batch_size=8)
    assert [len(b) for b in writer.batches] == [1, 9, 8, 2]  # the error row rides along with its batch
    assert [r.path for b in writer.batches for r in b] == [f"img{i}" for i in range(20)]
    assert summary.errors == 1 and summary.processed == 20
