"""Data-parallel training on several GPUs (or machines) with PyTorch's own engine:
DistributedDataParallel, launched by ``torchrun``.

With ``train.processes: N`` the training notebook launches (``lmkit.chain.launch``), on this machine,

    python -m torch.distributed.run --standalone --nproc_per_node=N -m lmkit.chain.distributed RUN_DIR

and waits for it. On several machines, run the same module under torchrun on each one
(``--nnodes``, ``--node_rank``, ``--rdzv-endpoint``; the run folder on shared storage).
Each process trains with notebook 03's study cells as saved (its network, loss and training step,
``lmkit.study.cells.study``; ``$LMKIT_NOTEBOOKS`` names the notebooks folder, as ``lmkit run`` sets it).
What each process trains on is said once, in ``lmkit.train.loop.fit``. NCCL on GPUs, gloo on CPU.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def main(argv: list[str] | None = None) -> int:
    from lmkit.run import params as P
    from lmkit.study.cells import study
    from lmkit.train.devices import process_group_backend
    from lmkit.run.progress import quiet
    from lmkit.run.folder import RunFolder
    from lmkit.chain.training import fit_run

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: torchrun ... -m lmkit.chain.distributed RUN_DIR", file=sys.stderr)
        return 2
    run = RunFolder(argv[0])
    params = P.load(run.params)
    cuda = torch.cuda.is_available()
    if cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        params = P.merge(params, {"train.device": f"cuda:{local_rank}"})
    dist.init_process_group(process_group_backend(cuda))
    try:
        cells = study()
        fit_run(run, params, cells.build_network, cells.train_step, log=print if dist.get_rank() == 0 else quiet)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
