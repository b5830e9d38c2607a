"""The classical peer: dlib's ERT trained on the run's own training faces, scored in 04 beside the
network on the same test faces, trained once per set of faces and reused when the network changes."""

import numpy as np
import pytest

from lmkit.run import params as P
from lmkit.run.folder import RunFolder
from tests.conftest import TINY
from tests.study import steps

pytest.importorskip("dlib")

ERT = {"eval.ert": True, "eval.ert_trees": 20, "eval.ert_cascades": 4, "eval.detector_box": False}


def test_the_ert_learns_the_faces_it_is_given(tmp_path):
    """On the training faces themselves, an ERT lands far nearer the points than their mean shape."""
    from lmkit.data.prepare import prepare
    from lmkit.use.peers import run_ert, train_ert

    p = P.load(None, TINY | {"data.synthetic_train": 60})
    tr = prepare(p.data, 0, tmp_path / "cache", lambda _: None)["train"]
    crops, points = tr.images[:], np.asarray(tr.landmarks)
    trained = train_ert(crops, points, tmp_path / "ert", trees=50, cascades=5, log=lambda _: None)
    pred = run_ert(trained["file"], crops, points)["pred"]
    ert_error = np.linalg.norm(pred - points, axis=-1).mean()
    mean_error = np.linalg.norm(points.mean(0) - points, axis=-1).mean()
    assert ert_error < 0.6 * mean_error, (ert_error, mean_error)
    again = train_ert(crops, points, tmp_path / "ert", trees=50, cascades=5, log=lambda _: None)
    assert again["reused"] and again["file"] == trained["file"]
    other = train_ert(
        crops[:40], points[:40], tmp_path / "ert", trees=50, cascades=5, log=lambda _: None
    )
    assert not other["reused"] and other["file"] != trained["file"]  # other faces: trained anew


@pytest.mark.slow  # a training and two evaluations
def test_04_scores_the_ert_beside_the_network_and_reuses_it_for_a_new_network(tmp_path):
    from lmkit.report.predictions import METHODS

    run = RunFolder(tmp_path / "run")
    params = P.load(None, TINY | ERT | {"search.enabled": False})
    P.dump(params, run.params)
    steps.prepare(run, params, log=lambda _: None)
    steps.hpsearch(run, params, log=lambda _: None)
    steps.train(run, params, log=lambda _: None)
    lines = []
    metrics = steps.evaluate(run, params, log=lines.append, peers=False)
    row = metrics["methods"][METHODS["ert"]]
    assert np.isfinite(row["nme_io_mean"]) and row["seconds_per_face"] > 0
    assert metrics["ert_train_minutes"] > 0 and "reused" not in metrics["ert"]
    assert list(metrics["methods"]).index(METHODS["ert"]) > list(metrics["methods"]).index(
        METHODS["model"]
    )
    again = P.merge(params, {"train.epochs": 3})  # a new network, the same training faces
    steps.train(run, again, log=lambda _: None)
    metrics = steps.evaluate(run, again, log=lambda _: None, peers=False)
    assert "reused" in metrics["ert"]
    assert metrics["methods"][METHODS["ert"]]["nme_io_mean"] == pytest.approx(row["nme_io_mean"])


def test_the_ert_is_off_for_synthetic_faces_unless_asked():
    from lmkit.report.evaluation import ert_unavailable

    assert "off" in ert_unavailable(P.load(None))
    assert ert_unavailable(P.load(None, {"eval.ert": True})) is None
