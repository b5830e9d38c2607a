"""eval/predictions.npz through its one reader and writer (lmkit.report.predictions): the file's
array names are composed in one place, and a method or normalisation that does not exist is an
error naming it, not a silent KeyError on a composed string."""

import numpy as np
import pytest

from lmkit.report.predictions import METHODS, Predictions


def test_a_round_trip_keeps_every_array_under_the_files_names(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.random((4, 5, 2))
    per = {
        "model": {
            "pred": true + 1,
            "mse": np.arange(4.0),
            "nme_io": np.full(4, 0.05),
            "nme_oc": np.full(4, 0.04),
        },
        "mean_shape": {"pred": true * 0, "mse": np.ones(4), "nme_io": np.full(4, 0.2)},
    }
    extra = {"model_detector": {"boxes": np.zeros((4, 4))}}
    path = Predictions.from_scores(
        true, ["a", "b", "c", "d"], np.array([0]), np.array([3]), per, extra
    ).save(tmp_path / "predictions.npz")
    with np.load(path) as raw:  # the file as earlier runs wrote it
        assert {
            "true",
            "names",
            "best",
            "worst",
            "model__pred",
            "model__nme_oc",
            "mean_shape__mse",
            "model_detector__boxes",
        } <= set(raw.files)
    p = Predictions.load(path)
    assert p.names == ["a", "b", "c", "d"] and p.headline_norm == "oc"
    np.testing.assert_array_equal(p.pred(), true + 1)
    np.testing.assert_array_equal(p.mse("mean_shape"), np.ones(4))
    assert list(p.nme_by_method("io")) == [METHODS["model"], METHODS["mean_shape"]]
    assert list(p.nme_by_method("oc")) == [METHODS["model"]]
    assert p.has("model_detector") is False and p.boxes("model_detector").shape == (4, 4)
    with pytest.raises(KeyError, match="unknown method 'modle'"):
        p.pred("modle")
    with pytest.raises(KeyError, match="unknown normalisation 'ic'"):
        p.nme("model", "ic")
