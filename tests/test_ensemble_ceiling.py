import numpy as np

from benchmarks.ensemble_ceiling import combinations, dihedral


def test_the_eight_views_are_the_rotations_and_mirror_images_of_each_cell():
    x = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)  # no symmetry: all 8 views differ
    views = dihedral(x)
    assert len(views) == 8 and np.array_equal(views[0], x)
    assert len({v.tobytes() for v in views}) == 8
    for v in views:  # each view maps every cell on its own, never mixing cells of the batch
        assert sorted(v[0].ravel()) == sorted(x[0].ravel()) and sorted(v[1].ravel()) == sorted(x[1].ravel())
    assert any(np.array_equal(v[0], x[0].T.reshape(3, 3, 1)) for v in views)  # the transpose, a mirror image, is among them


def test_combinations_use_the_untransformed_row_alone_and_all_rows_averaged():
    a = np.array([[1.0, -1.0], [3.0, 1.0]])
    b = np.array([[0.0, 2.0], [0.0, 0.0]])
    c = combinations(a, b)
    assert np.array_equal(c["A"], [1.0, -1.0]) and np.array_equal(c["A, 8 transforms"], [2.0, 0.0])
    assert np.array_equal(c["A+B"], [0.5, 0.5]) and np.array_equal(c["A+B, 8 transforms"], [1.0, 0.5])
