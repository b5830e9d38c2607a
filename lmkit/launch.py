"""Start data-parallel training of a run on this machine: ``torchrun`` with N processes,
each running ``lmkit.distributed`` (which trains through ``lmkit.steps.fit_weights``). Kept apart
from both so that neither imports the other."""
from __future__ import annotations

import subprocess
import sys

from .progress import emit


def launch(run, processes: int, log=print) -> None:
    """Run training of ``run`` in ``processes`` processes on this machine; output passes through."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "lmkit.distributed", str(run.root)]
    emit(log, "launch", f"launching {processes} processes: {' '.join(cmd[1:])}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        log(line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(f"distributed training failed (exit code {proc.returncode}); see the output above")
