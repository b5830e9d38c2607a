import pytest

from lmkit.study.schemes import SCHEMES, scheme_for_points


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=lambda s: s.name)
def test_groups_cover_every_point_once(scheme):
    covered = sorted(i for g in scheme.groups for i in g.indices)
    assert covered == list(range(scheme.n_points))
    assert scheme.group(scheme.left_eye) and scheme.group(scheme.right_eye)


def test_scheme_for_points():
    assert scheme_for_points(194).name == "helen194"
    assert scheme_for_points(68).name == "ibug68"
    with pytest.raises(ValueError, match="no landmark scheme has 5 points"):
        scheme_for_points(5)


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=lambda s: s.name)
def test_mirror_maps_are_involutions_that_swap_left_and_right(scheme):
    m = scheme.mirror
    assert all(m[m[i]] == i for i in range(scheme.n_points))
    left, right = scheme.group(scheme.left_eye).indices, scheme.group(scheme.right_eye).indices
    assert sorted(m[i] for i in left) == right
    assert sorted(m[i] for i in scheme.group("brow_a").indices) == scheme.group("brow_b").indices
    jaw = scheme.group("jaw").indices
    assert m[jaw[0]] == jaw[-1]


def test_helen194_mirror_map_matches_a_symmetric_face():
    """A frontal synthetic face, mirrored and renumbered, is the same face."""
    import numpy as np

    from lmkit.data.synthetic import face_shape

    pts = face_shape(np.random.default_rng(0))[:, :2]
    mirrored = pts[list(SCHEMES["helen194"].mirror)] * [-1, 1]
    np.testing.assert_allclose(mirrored, pts, atol=1e-9)


def test_ibug68_mirror_map_on_real_faces():
    """On real 68-point faces the mirrored mean shape matches the mean shape."""
    from pathlib import Path

    import numpy as np

    from lmkit.data.readers import read_pts

    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "helen68" / "trainset"
    files = sorted(folder.glob("*.pts"))[:200] if folder.is_dir() else []
    if not files:
        pytest.skip(f"real 68-point data not found at {folder}")
    shapes = []
    for f in files:
        p = read_pts(f).astype(np.float64)
        p -= p.mean(0)
        shapes.append(p / np.linalg.norm(p, axis=1).mean())
    mean = np.mean(shapes, 0)
    mirrored = mean[list(SCHEMES["ibug68"].mirror)] * [-1, 1]
    wrong = mean * [-1, 1]  # flipped but not renumbered
    right_error, wrong_error = np.abs(mirrored - mean).mean(), np.abs(wrong - mean).mean()
    assert right_error < 0.05 and right_error < wrong_error / 10
