"""Data-parallel training on several GPUs (or machines) with PyTorch's own engine:
DistributedDataParallel, launched by ``torchrun``.

With ``train.processes: N`` the training notebook launches, on this machine,

    python -m torch.distributed.run --standalone --nproc_per_node=N -m lmkit.distributed RUN_DIR

and waits for it. On several machines, run the same module under torchrun on each one
(``--nnodes``, ``--node_rank``, ``--rdzv-endpoint``; the run folder on shared storage).
``train.batch_size`` is the global batch: each process trains on batch_size / N images of
every step (see ``lmkit.train.fit`` for batch-norm statistics). NCCL on GPUs, gloo on CPU.
"""
from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist


def launch(run, processes: int, log=print) -> None:
    """Run training of ``run`` in ``processes`` processes on this machine; output passes through."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "lmkit.distributed", str(run.root)]
    log(f"launching {processes} processes: {' '.join(cmd[1:])}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        log(line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(f"distributed training failed (exit code {proc.returncode}); see the output above")


def main(argv: list[str] | None = None) -> int:
    from . import params as P
    from . import steps
    from .runfolder import RunFolder

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: torchrun ... -m lmkit.distributed RUN_DIR", file=sys.stderr)
        return 2
    run = RunFolder(argv[0])
    params = P.load(run.params)
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        params = P.merge(params, {"train.device": f"cuda:{local_rank}"})
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    try:
        steps.train(run, params, log=print if dist.get_rank() == 0 else (lambda _: None))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
