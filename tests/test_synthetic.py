import numpy as np
import pytest
from scipy import ndimage

from lmkit.data.synthetic import synthetic_faces


def test_deterministic_per_seed_and_split():
    a = list(synthetic_faces(3, "train", seed=1))
    b = list(synthetic_faces(3, "train", seed=1))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.landmarks, y.landmarks)
    other = next(synthetic_faces(1, "test", seed=1))
    assert not np.array_equal(other.landmarks, a[0].landmarks)
    assert next(synthetic_faces(1, "train", seed=2)).name == a[0].name  # names index faces


def test_faces_have_194_points_inside_the_image():
    for s in synthetic_faces(5, "train"):
        assert s.image.shape == (300, 300, 3) and s.image.dtype == np.uint8
        assert s.landmarks.shape == (194, 2)
        assert (s.landmarks > -30).all() and (s.landmarks < 330).all()


def test_landmarks_lie_on_drawn_edges():
    """Image gradients at the landmarks are far stronger than at random points nearby."""
    ratios = []
    for s in synthetic_faces(6, "train", seed=3):
        gray = ndimage.gaussian_filter(s.image.astype(float).mean(2), 1.5)
        mag = np.hypot(ndimage.sobel(gray, 0), ndimage.sobel(gray, 1))
        ij = np.clip(np.floor(s.landmarks).astype(int), 0, 299)
        at_points = mag[ij[:, 1], ij[:, 0]].mean()
        shifted = np.clip(ij + np.random.default_rng(0).integers(-12, 13, ij.shape), 0, 299)
        ratios.append(at_points / mag[shifted[:, 1], shifted[:, 0]].mean())
    assert np.median(ratios) > 1.5


def test_unknown_split():
    with pytest.raises(ValueError, match="synthetic split"):
        next(synthetic_faces(1, "val"))
