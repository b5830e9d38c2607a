import numpy as np
import pytest

from lmkit.study import metrics
from lmkit.study.schemes import IBUG68


def test_mse_is_mean_over_points_and_coordinates():
    true = np.zeros((2, 2, 2))
    pred = np.array([[[1, 2], [3, 4]], [[0, 0], [0, 2]]], float)
    # image 0: (1 + 4 + 9 + 16) / 4 = 7.5; image 1: 4 / 4 = 1
    np.testing.assert_allclose(metrics.mse_per_image(pred, true), [7.5, 1.0])
    np.testing.assert_allclose(metrics.mse_per_image(pred, true, scale=2.0), [30.0, 4.0])


def test_nme_with_inter_ocular_distance():
    true = np.zeros((1, 68, 2))
    true[0, 36:42] = [10, 50]  # eye a centre
    true[0, 42:48] = [50, 50]  # eye b centre: 40 px apart
    pred = true.copy()
    pred[0, 0] += [3, 4]  # one point 5 px off
    assert metrics.inter_ocular(true, IBUG68)[0] == pytest.approx(40)
    assert metrics.nme_per_image(pred, true, metrics.inter_ocular(true, IBUG68))[
        0
    ] == pytest.approx(5 / 68 / 40)
    true[0, 36], true[0, 45] = [0, 50], [70, 50]
    assert metrics.outer_corners(true, IBUG68)[0] == pytest.approx(70)


def test_ced_auc_and_failure_rate_by_hand():
    nme = np.array([0.02, 0.05, 0.09, 0.2])
    x, y = metrics.ced(nme, max_error=0.1, steps=11)
    np.testing.assert_allclose(y[[0, 2, 5, 9, 10]], [0, 0.25, 0.5, 0.75, 0.75])
    # AUC@0.1 = mean of (0.1 - e)/0.1 over images, 0 for failures: (0.8 + 0.5 + 0.1 + 0) / 4
    assert metrics.auc(nme, 0.1) == pytest.approx(0.35)
    assert metrics.failure_rate(nme, 0.08) == pytest.approx(0.5)
    assert metrics.failure_rate(nme, 0.10) == pytest.approx(0.25)


def test_auc_matches_numerical_integral_of_the_ced():
    nme = np.random.default_rng(0).uniform(0, 0.15, 500)
    x, y = metrics.ced(nme, max_error=0.08, steps=8001)
    assert metrics.auc(nme, 0.08) == pytest.approx(np.trapezoid(y, x) / 0.08, abs=1e-3)


def test_mean_shape_and_best_worst():
    shapes = np.array([[[0, 0]], [[2, 4]]], float)
    np.testing.assert_allclose(metrics.mean_shape(shapes), [[1, 2]])
    best, worst = metrics.best_and_worst(np.array([5, 1, 9, 3, 7, 2]), k=2)
    assert list(best) == [1, 5] and list(worst) == [2, 4]


def test_nme_in_photo_pixels_undoes_the_crops_stretch():
    """A face whose crop box is twice as tall as wide: in the square crop its eyes are closer
    and its vertical errors smaller; mapped back to the photo, the NME is the photo's."""
    from lmkit.study.metrics import summarize, to_photo
    from lmkit.data.prepare import crop_to_photo
    from lmkit.study.schemes import IBUG68

    rng = np.random.default_rng(0)
    true = rng.uniform(20, 80, (3, 68, 2))
    pred = true + rng.normal(0, 2, true.shape)
    boxes = np.array([[10, 20, 110, 220], [0, 0, 50, 100], [5, 5, 305, 605]], dtype=np.float64)
    photo_true, photo_pred = to_photo(true, boxes, 100), to_photo(pred, boxes, 100)
    for i, b in enumerate(boxes):
        np.testing.assert_allclose(photo_true[i], crop_to_photo(b, 100)(true[i]))
    per, _ = summarize(pred, true, IBUG68, 2.56, photo=(photo_pred, photo_true))
    corners = np.linalg.norm(photo_true[:, 36] - photo_true[:, 45], axis=1)
    np.testing.assert_allclose(
        per["nme_oc"], metrics.nme_per_image(photo_pred, photo_true, corners)
    )
    crop, _ = summarize(pred, true, IBUG68, 2.56)
    assert not np.allclose(per["nme_oc"], crop["nme_oc"])
    np.testing.assert_allclose(per["mse"], crop["mse"])  # the study's MSE stays in the 256 frame
