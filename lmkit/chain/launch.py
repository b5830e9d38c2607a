"""Start data-parallel training of a run on this machine: ``torchrun`` with N processes,
each running ``lmkit.chain.distributed`` (which trains through ``lmkit.chain.distributed.train_run`` with
notebook 03's study cells)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from lmkit.study.cells import ENV, check_saved, notebooks_dir
from lmkit.run.progress import emit
from lmkit.run.params import Params


def train_in_processes(run, params: Params, build, step, log=print):
    """Notebook 03's training in ``system.processes`` processes on this machine (``torchrun``), each
    running ``lmkit.chain.distributed.train_run`` with 03's study cells as saved; refused when ``build`` or
    ``step`` (this kernel's) differ from the saved cells. Returns the history.

    Used in: 03_train, "Training"."""
    import pandas as pd

    check_saved(build, step)
    check_devices(params.system.processes, params.system.device)
    launch(run, params.system.processes, log)
    return pd.read_csv(run.history)


def check_devices(processes: int, device: str) -> None:
    """One GPU per process: refused before launching when there are fewer (each extra process
    would fail at ``set_device`` with "invalid device ordinal"). On a CPU (``system.device: cpu``,
    or no CUDA) the processes share the cores."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.startswith("cuda") and not gpus:
        raise RuntimeError(
            f"system.device: {device} asked for, but this machine has no CUDA device"
        )
    if gpus and device != "cpu" and processes > gpus:
        raise RuntimeError(
            f"system.processes: {processes} processes need {processes} GPUs, one each; this machine "
            f"has {gpus} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
        )


def launch(run, processes: int, log=print) -> None:
    """Run training of ``run`` in ``processes`` processes on this machine; output passes through."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "lmkit.chain.distributed",
        str(run.root),
    ]
    emit(log, "launch", f"launching {processes} processes: {' '.join(cmd[1:])}")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, ENV: str(notebooks_dir())},
    )  # the study cells each process runs
    for line in proc.stdout:
        log(line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(
            f"distributed training failed (exit code {proc.returncode}); see the output above"
        )
