import os

import pytest

from edge_app.sources import decode_stream, expand_paths
from tests.conftest import BLUE, RED, cell


def test_folders_expand_sorted_recursive_and_deduplicated(cells_dir):
    (cells_dir / ".hidden.png").write_bytes(b"x")
    (cells_dir / "Thumbs.db").write_bytes(b"x")
    files = expand_paths([cells_dir, cells_dir / "red_0.png"])
    names = [os.path.relpath(f, cells_dir) for f in files]
    assert names == ["blue_0.png", "blue_1.png", "red_0.png", "red_1.png", "red_2.png", os.path.join("sub", "blue_2.png")]


def test_the_same_file_through_a_link_or_twice_is_listed_once(cells_dir, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    os.symlink(cells_dir / "red_0.png", links / "a_link_to_red_0.png")
    os.symlink(tmp_path / "gone.png", links / "dangling.png")  # a dangling link named explicitly still gets its row
    files = expand_paths([links / "a_link_to_red_0.png", cells_dir, cells_dir, links / "dangling.png", links / "dangling.png"])
    assert files[0] == str(links / "a_link_to_red_0.png")
    assert str(cells_dir / "red_0.png") not in files and len(files) == 7
    assert files[-1] == str(links / "dangling.png")


def test_no_recursive_stays_in_the_folder(cells_dir):
    assert not any("sub" in f for f in expand_paths([cells_dir], recursive=False))


def test_explicit_non_image_file_is_kept_so_it_gets_an_error_row(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert expand_paths([notes]) == [str(notes)]


def test_missing_path_is_a_usage_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        expand_paths([tmp_path / "nope"])


@pytest.mark.parametrize("workers,chunk", [(3, 8), (1, 1), (2, 3)])  # look-ahead shorter than the list, and chunks that do not divide it
def test_decode_stream_keeps_input_order_and_reports_errors(tmp_path, workers, chunk):
    paths = []
    for i in range(40):
        p = tmp_path / f"{i:02d}.png"
        if i % 7 == 3:
            p.write_bytes(b"garbage")
        else:
            cell(RED if i % 2 else BLUE, size=(20 + i, 30), seed=i).save(p)
        paths.append(str(p))
    out = list(decode_stream(paths, 16, "pad", workers=workers, chunk=chunk))
    assert [d.path for d in out] == paths
    for i, d in enumerate(out):
        if i % 7 == 3:
            assert d.pixels is None and "not an image" in d.error
        else:
            assert d.pixels.shape == (16, 16, 3) and d.error is None


def test_file_vanishing_after_listing_is_an_error_row(tmp_path):
    p = tmp_path / "a.png"
    cell(RED).save(p)
    files = expand_paths([tmp_path])
    p.unlink()
    (only,) = list(decode_stream(files, 16, "pad"))
    assert only.pixels is None and "not found" in only.error


def test_a_link_loop_is_walked_once(cells_dir):
    os.symlink("..", cells_dir / "sub" / "loop")
    assert len(expand_paths([cells_dir])) == 6


def test_an_unreadable_folder_is_reported_and_skipped(cells_dir, unreadable_sub):
    skipped = []
    files = expand_paths([cells_dir], on_skipped=lambda folder, reason: skipped.append((folder, reason)))
    assert len(files) == 5 and skipped == [(str(cells_dir / "sub"), "Permission denied")]
