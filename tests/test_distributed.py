"""DistributedDataParallel on CPU with gloo: two processes end with identical weights, and the
loss falls as in one process with the same global batch."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmkit.study import metrics
from lmkit.run import params as P
from lmkit.data.prepare import prepare, split_train_val
from lmkit.train.config import TrainConfig, model_options, new_model
from lmkit.train.loop import fit, shard
from tests.study import STUDY

pytestmark = pytest.mark.slow  # whole chains or several processes

CHANGES = {
    "data.synthetic_train": 40,
    "data.synthetic_test": 4,
    "model.input_size": 32,
    "model.head_init": "mean_shape",
    "train.epochs": 3,
    "train.batch_size": 16,
    "train.epoch_multiplier": 2,
    "train.lr": 2e-3,
    "train.weight_decay": 0.0,
}


def _data(cache):
    p = P.load(None, CHANGES)
    tr = prepare(p.data, 0, cache, lambda _: None)["train"]
    s = split_train_val(len(tr), 0.2, 0)
    return (
        p,
        (tr.images[s["train"]], tr.landmarks[s["train"]]),
        (tr.images[s["val"]], tr.landmarks[s["val"]]),
    )


def _worker(rank, world, tmp):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world
    )
    p, train, val = _data(f"{tmp}/cache")
    model = new_model(
        STUDY.build_network, 194, metrics.mean_shape(train[1]), 0, "cpu", **model_options(p)
    )
    hist = fit(
        model, STUDY.train_step, train, val, TrainConfig.from_params(p, "cpu"), log=lambda _: None
    )
    torch.save(
        {"params": [t.detach() for t in model.parameters()], "history": hist},
        f"{tmp}/rank{rank}.pt",
    )
    dist.destroy_process_group()


def test_shard_splits_every_global_batch():
    order = torch.arange(20)
    a, b = shard(order, 8, 0, 2), shard(order, 8, 1, 2)
    assert a.tolist() == [0, 1, 2, 3, 8, 9, 10, 11] and b.tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    with pytest.raises(ValueError, match="divisible"):
        shard(order, 9, 0, 2)


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    _data(tmp_path / "cache")  # prepare once, before the processes read it
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.equal(a, b)
    timing = ["seconds", "images_per_s"]
    pd.testing.assert_frame_equal(
        r0["history"].drop(columns=timing), r1["history"].drop(columns=timing)
    )
    ddp = r0["history"]["train_mse"].to_numpy()

    p, train, val = _data(tmp_path / "cache")
    single = fit(
        new_model(
            STUDY.build_network, 194, metrics.mean_shape(train[1]), 0, "cpu", **model_options(p)
        ),
        STUDY.train_step,
        train,
        val,
        TrainConfig.from_params(p, "cpu"),
        log=lambda _: None,
    )["train_mse"].to_numpy()
    assert ddp[-1] < 0.6 * ddp[0] and single[-1] < 0.6 * single[0]  # both learn
    # and at the same pace: the relative fall matches (absolute values differ with per-process batch norm)
    np.testing.assert_allclose(ddp / ddp[0], single / single[0], atol=0.1)


def test_training_step_launches_torchrun_with_processes(tmp_path):
    from tests.study import steps
    from lmkit.run.folder import RunFolder

    run = RunFolder(tmp_path / "run")
    params = P.load(
        None, CHANGES | {"system.processes": 2, "train.epochs": 1, "search.enabled": False}
    )
    P.dump(params, run.params)
    steps.prepare(run, params, log=lambda _: None)
    steps.hpsearch(run, params, log=lambda _: None)
    lines = []
    history = steps.train(run, params, log=lines.append)
    assert any("launching 2 processes" in line for line in lines)
    assert list(history["epoch"]) == [1] and run.best_checkpoint.exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_through_torchruns_rendezvous(tmp_path):
    """As two machines would: two torchrun launchers (one process each, --nnodes=2) meet at a
    c10d rendezvous endpoint and train one run folder on shared storage with gloo."""
    import os
    import subprocess
    import sys

    from tests.study import steps
    from lmkit.run.folder import RunFolder

    run = RunFolder(tmp_path / "run")
    params = P.load(
        None, CHANGES | {"system.processes": 2, "train.epochs": 2, "search.enabled": False}
    )
    P.dump(params, run.params)
    steps.prepare(run, params, log=lambda _: None)
    steps.hpsearch(run, params, log=lambda _: None)
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=localhost:{port}",
                "--rdzv-id=lmkit-test",
                "--max-restarts=0",
                "-m",
                "lmkit.chain.distributed",
                str(run.root),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(outputs)
    history = pd.read_csv(run.history)
    assert list(history["epoch"]) == [1, 2] and run.best_checkpoint.exists()
    assert history["train_mse"].iloc[-1] < history["train_mse"].iloc[0]
    # both nodes trained: the world had two members, each with half of every global batch
    assert "world size 2" in "".join(outputs)
