import numpy as np
import pandas as pd
import pytest
import torch

from lmkit.run import params as P
from lmkit.study import metrics
from lmkit.data.prepare import prepare, split_train_val
from lmkit.train.config import TrainConfig, model_options, new_model
from lmkit.train.loop import Diverged, fit
from lmkit.train.checkpoints import load_checkpoint
from tests.study import STUDY


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from lmkit.run import params as P

    p = P.load(
        None,
        {
            "data.synthetic_train": 60,
            "data.synthetic_test": 4,
            "model.input_size": 32,
            "model.head_init": "mean_shape",
            "train.batch_size": 16,
            "train.epoch_multiplier": 1,
        },
    )
    splits = prepare(p.data, 0, tmp_path_factory.mktemp("cache"), lambda _: None)
    s = split_train_val(60, 0.2, 0)
    tr = splits["train"]
    return (
        p,
        (tr.images[s["train"]], tr.landmarks[s["train"]]),
        (tr.images[s["val"]], tr.landmarks[s["val"]]),
    )


def _model(p, train):
    return new_model(
        STUDY.build_network, 194, metrics.mean_shape(train[1]), 0, "cpu", **model_options(p)
    )


def test_short_training_lowers_the_loss(data):
    p, train, val = data
    cfg = TrainConfig.from_params(p, "cpu", epochs=4, lr=2e-3, weight_decay=0.0)
    hist = fit(_model(p, train), STUDY.train_step, train, val, cfg, log=lambda _: None)
    assert list(hist["epoch"]) == [1, 2, 3, 4]
    assert hist["train_mse"].iloc[-1] < 0.7 * hist["train_mse"].iloc[0]


def test_resume_continues_and_matches_an_uninterrupted_run(data, tmp_path):
    p, train, val = data
    cfg = TrainConfig.from_params(p, "cpu", epochs=3, lr=1e-3, weight_decay=1e-4)
    full_model = _model(p, train)
    full = fit(
        full_model, STUDY.train_step, train, val, cfg, out_dir=tmp_path / "full", log=lambda _: None
    )

    first = TrainConfig.from_params(
        p, "cpu", epochs=2, lr=1e-3, weight_decay=1e-4, keep_checkpoints=True
    )
    fit(
        _model(p, train),
        STUDY.train_step,
        train,
        val,
        first,
        out_dir=tmp_path / "parts",
        log=lambda _: None,
    )
    logs = []
    resumed_model = _model(p, train)
    resumed = fit(
        resumed_model,
        STUDY.train_step,
        train,
        val,
        cfg,
        out_dir=tmp_path / "parts",
        resume=True,
        log=logs.append,
    )
    assert any("resuming" in line and "after epoch 2" in line for line in logs)
    assert list(resumed["epoch"]) == [1, 2, 3]
    np.testing.assert_allclose(resumed["train_mse"], full["train_mse"], rtol=1e-4)
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    on_disk = pd.read_csv(tmp_path / "parts" / "history.csv")
    assert list(on_disk["epoch"]) == [1, 2, 3]
    best = load_checkpoint(tmp_path / "parts" / "best.pt")
    assert best["history"][-1]["val_mse"] == pytest.approx(on_disk["val_mse"].min())


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="last.pt: cannot read checkpoint"):
        load_checkpoint(bad)


def test_a_huge_learning_rate_stops_at_the_first_non_finite_loss(data, tmp_path):
    from lmkit.train.loop import Diverged

    p, train, val = data
    huge = TrainConfig.from_params(p, "cpu", epochs=3, lr=1e12, weight_decay=0.0)
    with pytest.raises(
        Diverged,
        match=r"training diverged: the (training loss is not finite|validation MSE is (nan|inf)).*"
        r"epoch 1",
    ):
        fit(
            _model(p, train),
            STUDY.train_step,
            train,
            val,
            huge,
            out_dir=tmp_path,
            log=lambda _: None,
        )
    assert not (tmp_path / "history.csv").exists()  # no epoch of NaN was recorded


def test_divergence_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    p, train, val = data
    cfg = TrainConfig.from_params(p, "cpu", epochs=3, lr=1e-3, weight_decay=0.0)
    calls = []

    def failing_in_epoch_2(*args):  # 3 steps per epoch (48 images, batches of 16)
        calls.append(1)
        loss, pred = STUDY.train_step(*args)
        return (torch.tensor(float("nan")), pred) if len(calls) > 3 else (loss, pred)

    with pytest.raises(
        Diverged, match=r"loss is not finite at epoch 2, step 1.*last\.pt \(epoch 1\), is kept"
    ):
        fit(
            _model(p, train),
            failing_in_epoch_2,
            train,
            val,
            cfg,
            out_dir=tmp_path,
            log=lambda _: None,
        )
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert list(pd.read_csv(tmp_path / "history.csv")["epoch"]) == [1]


def test_leftover_temporary_files_are_removed_and_resume_never_silently_restarts(data, tmp_path):
    p, train, val = data
    cfg = TrainConfig.from_params(p, "cpu", epochs=1, lr=1e-3, weight_decay=0.0)
    with pytest.raises(FileNotFoundError, match="train.resume is true but there is no checkpoint"):
        fit(
            _model(p, train),
            STUDY.train_step,
            train,
            val,
            cfg,
            out_dir=tmp_path,
            resume=True,
            log=lambda _: None,
        )
    debris = tmp_path / ".last.tmp4242.pt"
    debris.write_bytes(b"half a checkpoint")
    logs = []
    fit(_model(p, train), STUDY.train_step, train, val, cfg, out_dir=tmp_path, log=logs.append)
    assert not debris.exists() and any("half-written" in line for line in logs)


def test_the_heatmap_loss_adds_the_heatmaps_divergence_to_the_training_loss(data):
    """03's "Beyond the study" cell, with a heatmap head, L1 and the DSNT regulariser: the step it
    defines trains on L1 plus the weighted divergence of the same forward pass."""
    import torch.nn.functional as F

    from lmkit.study import cells
    from lmkit.study.losses import heatmap_divergence
    from lmkit.study.modelinfo import REFERENCE_SIZE

    p, train, _ = data
    p = P.merge(
        p,
        {
            "model.head": "heatmap-s4",
            "model.head_init": "default",
            "train.loss": "l1",
            "train.heatmap_loss": 5.0,
            "system.autocast": "none",
        },
    )  # float32: the sum is checked to 1e-4
    study = cells.study("03_train", params=p)
    cfg = TrainConfig.from_params(p, "cpu", lr=1e-3, weight_decay=0.0)
    model = new_model(study.build_network, 194, None, 0, "cpu", pretrained=False)
    assert model.head == "heatmap-s4"
    x, y = torch.rand(4, 3, 32, 32), torch.rand(4, 194, 2) * REFERENCE_SIZE
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        points, logits = model(x, heatmaps=True)
        expected = F.l1_loss(points, y) + 5.0 * heatmap_divergence(logits, y)
    model.load_state_dict(state)  # the batch norm's running statistics as before
    loss, _ = study.train_step(
        model, torch.optim.SGD(model.parameters(), lr=0.0), cfg.plan().grad_scaler(), x, y, cfg
    )
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)
    assert (
        float(loss) > float(F.l1_loss(points, y)) + 1.0
    )  # the divergence (> 0.2 nats at random init) is in it


def test_a_finished_training_keeps_only_the_best_weights_unless_asked(tmp_path):
    """The lean run folder: after the last epoch best.pt keeps the weights without the optimizer
    state and last.pt / previous.pt go (resume then says how to keep them); with
    train.keep_checkpoints they stay and the run resumes with more epochs."""
    from lmkit.run import params as P
    from lmkit.run.folder import RunFolder
    from lmkit.train.checkpoints import load_checkpoint
    from tests.study import steps

    sizes = {}
    for keep in (False, True):
        run = RunFolder(tmp_path / f"keep-{keep}")
        params = P.load(
            None,
            {
                "data.synthetic_train": 24,
                "data.synthetic_test": 4,
                "model.input_size": 32,
                "train.epochs": 2,
                "train.batch_size": 8,
                "train.epoch_multiplier": 1,
                "search.enabled": False,
                "train.keep_checkpoints": keep,
            },
        )
        P.dump(params, run.params)
        steps.prepare(run, params, log=lambda _: None)
        steps.hpsearch(run, params, log=lambda _: None)
        lines = []
        steps.train(run, params, log=lines.append)
        files = sorted(p.name for p in run.train_dir.glob("*.pt") if p.name != "model.pt")
        best = load_checkpoint(run.best_checkpoint)
        sizes[keep] = sum(
            p.stat().st_size for p in run.train_dir.glob("*.pt") if p.name != "model.pt"
        )
        more = P.merge(params, {"train.resume": True, "train.epochs": 3})
        if keep:
            assert files == ["best.pt", "last.pt", "previous.pt"] and "optimizer" in best
            assert len(steps.train(run, more, log=lambda _: None)) == 3
        else:
            assert files == ["best.pt"] and "optimizer" not in best and best["model"]
            assert any("removed last.pt and previous.pt" in line for line in lines)
            with pytest.raises(FileNotFoundError, match="train.keep_checkpoints: true"):
                steps.train(run, more, log=lambda _: None)
    assert sizes[False] < sizes[True] / 4


def test_keep_last_makes_the_last_epoch_the_best_checkpoint(data, tmp_path):
    """data.final (TrainConfig.keep_last): best.pt is the last epoch's weights even when that
    epoch validated worse; without it, the lowest validation MSE's."""
    p, train, val = data
    calls = []

    def spoiled_in_epoch_3(net, *args):  # 3 steps per epoch (48 images, batches of 16)
        out = STUDY.train_step(net, *args)
        calls.append(1)
        if len(calls) > 6:
            with torch.no_grad():
                for w in net.parameters():
                    w.add_(torch.randn_like(w) * 0.3)
        return out

    for final, expected in (
        (False, lambda h: int(h["epoch"][h["val_mse"].idxmin()])),
        (True, lambda h: 3),
    ):
        calls.clear()
        cfg = TrainConfig.from_params(
            P.merge(p, {"data.final": final}), "cpu", epochs=3, lr=1e-3, weight_decay=0.0
        )
        assert cfg.keep_last is final
        out = tmp_path / str(final)
        hist = fit(
            _model(p, train), spoiled_in_epoch_3, train, val, cfg, out_dir=out, log=lambda _: None
        )
        assert (
            hist["val_mse"].iloc[2] > hist["val_mse"].iloc[:2].min()
        )  # the spoiled epoch validated worse
        assert load_checkpoint(out / "best.pt")["epoch"] == expected(hist)
