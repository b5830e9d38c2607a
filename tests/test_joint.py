"""Joint training (data.joint_train): faces of another landmark scheme train beside the data set's
through outputs of their own on the shared backbone; each face's loss counts its own points only,
and the model file is a network of the data set's points alone."""

import numpy as np
import pytest
import torch

from lmkit.data.faces import Faces, RunData
from lmkit.run import params as P
from lmkit.run.folder import RunFolder
from lmkit.study import losses
from lmkit.study.model import LandmarkRegressor, keep_points
from lmkit.study.schemes import HELEN194, IBUG68

from tests.conftest import write_300w_faces
from tests.study import steps


@pytest.mark.parametrize("name", ["mse", "l1", "wing"])
def test_each_face_is_scored_on_its_own_points_and_a_full_batch_is_the_plain_loss(name):
    torch.manual_seed(0)
    pred = (torch.randn(5, 6, 2) * 20).requires_grad_()
    target = torch.randn(5, 6, 2) * 20
    plain = losses.landmark_loss(name, pred, target)
    torch.testing.assert_close(
        losses.known_points_loss(name, pred, target), plain
    )  # no joint faces: the loss as it was
    joint = target.clone()
    joint[:3, 4:] = float(
        "nan"
    )  # three faces of the first scheme (points 0-3), two of the second (4-5)
    joint[3:, :4] = float("nan")
    value = losses.known_points_loss(name, pred, joint)
    expected = (
        3 * losses.landmark_loss(name, pred[:3, :4], target[:3, :4])
        + 2 * losses.landmark_loss(name, pred[3:, 4:], target[3:, 4:])
    ) / 5
    assert torch.isfinite(value) and torch.allclose(value, expected)
    value.backward()
    assert (pred.grad[:3, 4:] == 0).all() and (
        pred.grad[3:, :4] == 0
    ).all()  # no pull on points a face lacks
    assert (pred.grad[:3, :4] != 0).all() and (pred.grad[3:, 4:] != 0).all()


def test_the_heatmap_divergence_of_a_joint_batch_counts_each_face_on_its_own_points():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 8, 8, requires_grad=True)
    target = torch.rand(4, 6, 2) * 256
    joint = target.clone()
    joint[:2, 3:] = float("nan")
    joint[2:, :3] = float("nan")
    value = losses.heatmap_divergence(logits, joint)
    expected = (
        losses.heatmap_divergence(logits[:2, :3], target[:2, :3])
        + losses.heatmap_divergence(logits[2:, 3:], target[2:, 3:])
    ) / 2
    assert torch.allclose(value, expected)
    value.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[:2, 3:] == 0).all()


def test_the_training_set_puts_both_schemes_side_by_side():
    rng = np.random.default_rng(0)
    main = Faces(
        rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8),
        rng.uniform(0, 8, (3, 194, 2)).astype(np.float32),
    )
    other = Faces(
        rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8),
        rng.uniform(0, 8, (2, 68, 2)).astype(np.float32),
    )
    alone = RunData(main, main, None, None, HELEN194, "x")
    images, landmarks, mirror, mean = alone.training()
    assert images is main.images and mirror == HELEN194.mirror and mean.shape == (194, 2)
    images, landmarks, mirror, mean = RunData(
        main, main, None, None, HELEN194, "x", other, IBUG68
    ).training()
    assert images.shape == (5, 8, 8, 3) and np.array_equal(images[3:], other.images)
    assert landmarks.shape == (5, 262, 2)
    assert (
        np.array_equal(landmarks[:3, :194], main.landmarks) and np.isnan(landmarks[:3, 194:]).all()
    )
    assert (
        np.array_equal(landmarks[3:, 194:], other.landmarks) and np.isnan(landmarks[3:, :194]).all()
    )
    assert mirror[:194] == HELEN194.mirror and mirror[194:] == tuple(194 + i for i in IBUG68.mirror)
    assert sorted(mirror) == list(range(262))
    assert np.allclose(mean[:194], main.landmarks.mean(0)) and np.allclose(
        mean[194:], other.landmarks.mean(0)
    )


@pytest.mark.parametrize("head", ["regression", "heatmap"])
def test_keeping_the_first_points_keeps_their_predictions(head):
    torch.manual_seed(1)
    both = LandmarkRegressor(262, False, head).eval()
    alone = LandmarkRegressor(194, False, head).eval()
    alone.load_state_dict(keep_points(both.state_dict(), 194, head))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(alone(x), both(x)[:, :194], atol=1e-5)


@pytest.mark.slow
def test_a_joint_run_trains_both_and_its_model_file_has_the_data_sets_points(tmp_path):
    data = tmp_path / "data"
    write_300w_faces(data / "trainset", 20, 0, k=68)
    write_300w_faces(data / "testset", 4, 100, k=68)
    joint = write_300w_faces(tmp_path / "other", 10, 200, k=194)
    params = P.load(
        None,
        {
            "data.source": "300w",
            "data.root": str(data),
            "data.joint_train": [str(joint)],
            "data.cache_dir": str(tmp_path / "cache"),
            "model.input_size": 32,
            "train.epochs": 1,
            "train.batch_size": 8,
            "search.enabled": False,
            "eval.detector_box": False,
        },
    )
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    P.dump(params, run.params)
    lines = []
    steps.prepare(run, params, log=lines.append)
    d = steps.load_data(run, params)
    assert d.scheme == IBUG68 and d.joint_scheme == HELEN194
    assert len(d.joint.images) == 10 and "other (194 points, joint)" in d.dataset
    steps.hpsearch(run, params, log=lines.append)
    history = steps.train(run, params, log=lines.append)
    assert np.isfinite(history["train_loss"]).all() and np.isfinite(history["val_mse"]).all()
    assert any("10 of the faces helen194, through outputs of their own" in line for line in lines)
    model, info = steps.load_model(run, params, "cpu")
    assert model.n_points == info.n_points == 68 and info.scheme == "ibug68"
    results = steps.evaluate(run, params, log=lines.append, peers=False)
    assert results["n_test"] == 4


def test_joint_faces_need_real_data_and_the_clean_split():
    with pytest.raises(P.ParamsError, match="data.joint_train: needs a real data set"):
        P.load(None, {"data.joint_train": ["/x"]})
    with pytest.raises(P.ParamsError, match="data.joint_train: needs data.split clean"):
        P.load(
            None,
            {
                "data.source": "300w",
                "data.root": "/x",
                "data.joint_train": ["/x"],
                "data.split": "paper",
                "model.bias_correction": False,
            },
        )


def test_the_protocol_table_says_the_joint_faces_are_not_the_studys_data():
    from lmkit.report.protocol import compare

    manifest = {"source": "helen", "n_points": 194, "box": "study", "root": "/x/helen194"}
    plain = P.load(
        None,
        {
            "data.source": "helen",
            "data.root": "/x/helen194",
            "data.box": "study",
            "data.padding": 5,
        },
    )
    joint = P.merge(plain, {"data.joint_train": ["/x/afw68"]})
    plain_row = {r["aspect"]: r for r in compare(plain, manifest, manifest, 560, 140, 170)}[
        "data set"
    ]
    joint_row = {r["aspect"]: r for r in compare(joint, manifest, manifest, 560, 140, 170)}[
        "data set"
    ]
    assert plain_row["same"] and "afw68" not in plain_row["run"]
    assert joint_row["same"] is False and "trained beside afw68" in joint_row["run"]
