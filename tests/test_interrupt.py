"""Interrupted runs lose nothing: a training process killed with SIGKILL in the middle of an
epoch resumes from its last checkpoint and ends with the same weights as an uninterrupted
run; a corrupt checkpoint is refused clearly and the one before it is kept."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from lmkit.run import params as P
from tests.study import steps
from lmkit.run.folder import RunFolder
from lmkit.train.checkpoints import load_checkpoint

CHANGES = {
    "data.synthetic_train": 40,
    "data.synthetic_test": 4,
    "model.input_size": 32,
    "model.head_init": "mean_shape",
    "train.epochs": 4,
    "train.batch_size": 8,
    "train.epoch_multiplier": 3,
    "search.enabled": False,
    "train.keep_checkpoints": True,
}  # compared and resumed after finishing
TRAIN = (
    "import sys; from lmkit.run import params as P; from tests.study import steps; from lmkit.run.folder import RunFolder; "
    "run = RunFolder(sys.argv[1]); steps.train(run, P.load(run.params))"
)


def _run(folder, **changes):
    run = RunFolder(folder)
    params = P.load(None, CHANGES | changes)
    P.dump(params, run.params)
    steps.prepare(run, params, log=lambda _: None)
    steps.hpsearch(run, params, log=lambda _: None)
    return run


def _train_process(run):
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(run.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_sigkill_mid_epoch_then_resume_gives_the_same_weights(tmp_path):
    whole = _run(tmp_path / "whole")
    assert _train_process(whole).wait() == 0

    cut = _run(tmp_path / "cut")
    proc = _train_process(cut)
    deadline = time.time() + 120
    while not (cut.train_dir / "last.pt").exists():  # epoch 1 done ...
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    time.sleep(0.3)  # ... and into epoch 2
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not [
        p for p in cut.train_dir.iterdir() if p.name.startswith(".")
    ]  # no half-written file left
    epochs_done = load_checkpoint(cut.train_dir / "last.pt")["epoch"]
    assert epochs_done < 4

    P.dump(P.merge(P.load(cut.params), {"train.resume": True}), cut.params)
    out = _train_process(cut)
    assert out.wait() == 0
    assert (
        f"resuming from {cut.train_dir / 'last.pt'} after epoch {epochs_done}" in out.stdout.read()
    )
    a, b = load_checkpoint(whole.train_dir / "last.pt"), load_checkpoint(cut.train_dir / "last.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    pd.testing.assert_frame_equal(
        pd.read_csv(whole.history).drop(columns=["seconds", "images_per_s"]),
        pd.read_csv(cut.history).drop(columns=["seconds", "images_per_s"]),
    )


def test_corrupt_checkpoint_is_refused_and_the_previous_kept(tmp_path):
    run = _run(tmp_path / "r", **{"train.epochs": 2, "train.epoch_multiplier": 1})
    steps.train(run, P.load(run.params), log=lambda _: None)
    last, previous = run.train_dir / "last.pt", run.train_dir / "previous.pt"
    assert load_checkpoint(previous)["epoch"] == 1 and load_checkpoint(last)["epoch"] == 2
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    P.dump(P.merge(P.load(run.params), {"train.resume": True, "train.epochs": 3}), run.params)
    with pytest.raises(
        RuntimeError, match=r"last\.pt: cannot read checkpoint, corrupt or truncated.*previous\.pt"
    ):
        steps.train(run, P.load(run.params), log=lambda _: None)
    assert load_checkpoint(previous)["epoch"] == 1  # kept
