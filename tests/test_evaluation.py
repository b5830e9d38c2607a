"""The jobs of evaluation (lmkit.report.evaluation) on their own."""

import numpy as np
import torch

from lmkit.report.evaluation import crop_predictions, score, validation_scores
from lmkit.study import metrics
from lmkit.study.model import build_model, predict
from lmkit.study.modelinfo import ModelInfo
from lmkit.study.schemes import scheme_for_points
from lmkit.data.faces import Faces


def _model_and_faces(n=6, size=64):
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    landmarks = rng.uniform(0.2 * size, 0.8 * size, (n, 68, 2)).astype(np.float32)
    scheme = scheme_for_points(68)
    model = build_model(scheme.n_points, pretrained=False).eval()
    info = ModelInfo(
        scheme=scheme.name,
        n_points=scheme.n_points,
        input_size=32,
        crop_size=size,
        forehead=1 / 3,
        padding=0.05,
        mean_shape=landmarks.mean(0).tolist(),
        dataset="synthetic",
        correction=np.full((scheme.n_points, 2), 3.0).tolist(),
    )
    return model, info, Faces(images, landmarks), scheme


def test_scores_are_in_photo_pixels_and_the_mse_in_the_256_frame():
    model, info, faces, scheme = _model_and_faces()
    true = np.asarray(faces.landmarks, np.float64)
    pred = true + 2.0  # 2 crop pixels off in x and y
    boxes = np.tile(
        [10.0, 20.0, 10.0 + 128, 20.0 + 256], (len(true), 1)
    )  # the crop was 128 x 256 photo pixels
    _, rows = score({"model": pred}, true, boxes, 64, scheme)
    row = rows["model"]
    assert np.isclose(row["mse_mean"], (2.0 * 256 / 64) ** 2)
    # in the photo the error is (4, 8) pixels: x stretched by 2, y by 4
    t_photo = metrics.to_photo(true, boxes, 64)
    expected = (np.hypot(4, 8) / metrics.inter_ocular(t_photo, scheme)).mean()
    assert np.isclose(row["nme_io_mean"], expected)


def test_validation_is_scored_without_the_bias_correction_and_says_why_the_detector_was_not_run():
    model, info, faces, scheme = _model_and_faces()
    boxes = np.tile([0.0, 0.0, 64.0, 64.0], (len(faces.images), 1))
    v = validation_scores(
        model,
        info,
        faces,
        ["none.jpg"] * len(boxes),
        boxes,
        scheme,
        4,
        "cpu",
        False,
        True,
        {"source": "synthetic"},
    )
    assert v["faces"] == 6 and v["bias_correction"] is False and "synthetic" in v["detector_box"]
    assert set(v["methods"]) == {"model"}
    plain = predict(model, faces.images, 32, 4, "cpu")  # no correction
    _, rows = score({"model": plain}, np.asarray(faces.landmarks, np.float64), boxes, 64, scheme)
    assert np.isclose(v["methods"]["model"]["nme_io_mean"], rows["model"]["nme_io_mean"])
    corrected, _ = crop_predictions(model, info, faces.images, 4, "cpu", None)
    assert np.allclose(
        plain - corrected, 3.0 * 64 / 256, atol=1e-4
    )  # the test path does subtract it
