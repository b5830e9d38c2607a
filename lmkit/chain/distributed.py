"""Data-parallel training on several GPUs (or machines) with PyTorch's own engine:
DistributedDataParallel, launched by ``torchrun``.

With ``system.processes: N`` the training notebook launches (``lmkit.chain.launch``), on this machine,

    python -m torch.distributed.run --standalone --nproc_per_node=N -m lmkit.chain.distributed RUN_DIR

and waits for it. On several machines, run the same module under torchrun on each one
(``--nnodes``, ``--node_rank``, ``--rdzv-endpoint``; the run folder on shared storage).
Each process runs notebook 03's study cells as saved (``lmkit.study.cells.study``;
``$LMKIT_NOTEBOOKS`` names the notebooks folder, as ``lmkit run`` sets it) and the lines of
03's training cell (``train_run``). What each process trains on is said once, in
``lmkit.train.loop.fit``. NCCL between GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def train_run(run, params, build_network, train_step, log=print):
    """Notebook 03's training cell as a function: a fresh network from ``build_network`` trained
    with ``train_step`` on the run's faces, at the search's learning rate and weight decay, into
    ``train/``. What each process runs; the tests train a run through it."""
    from lmkit.data.faces import load_data
    from lmkit.train.config import TrainConfig, model_options, new_model
    from lmkit.train.loop import fit

    d = load_data(run, params)
    faces = (
        d.training()
    )  # with data.joint_train the joint faces too, each with both schemes' points
    cfg = TrainConfig.for_run(run, params, d, faces)
    if d.joint is not None:
        log(
            f"{len(d.joint.images)} of the faces {d.joint_scheme.name}, through outputs of their own"
        )
    net = new_model(
        build_network, len(faces.mean), faces.mean, params.seed, cfg.device, **model_options(params)
    )
    return fit(
        net,
        train_step,
        faces[:2],
        d.val,
        cfg,
        out_dir=run.train_dir,
        resume=params.train.resume,
        log=log,
    )


def main(argv: list[str] | None = None) -> int:
    from lmkit.run import params as P
    from lmkit.run.folder import RunFolder
    from lmkit.run.progress import quiet
    from lmkit.study.cells import study

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
        params = P.merge(params, {"system.device": f"cuda:{local_rank}"})
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        cells = study(params=params)
        train_run(
            run,
            params,
            cells.build_network,
            cells.train_step,
            log=print if dist.get_rank() == 0 else quiet,
        )
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
