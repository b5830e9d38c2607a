"""The chain's kernel: ipykernel without the shutdown interrupt's misleading ERROR line."""

import json
import logging
import os
from pathlib import Path

from lmkit.chain.kernel import quiet_shutdown_interrupt
from lmkit.chain.pipeline import this_python_kernel


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.seen = []

    def emit(self, record):
        self.seen.append(record.getMessage())


def test_the_shutdown_interrupt_is_dropped_and_other_kernel_errors_are_not():
    log = logging.getLogger("IPKernelApp-test")
    records = Records()
    log.addHandler(records)
    try:
        log.error("KeyboardInterrupt caught in kernel.")
        assert records.seen == [
            "KeyboardInterrupt caught in kernel."
        ]  # as ipykernel logs it at every shutdown
        quiet_shutdown_interrupt("IPKernelApp-test")
        log.error("KeyboardInterrupt caught in kernel.")
        log.error("Exception in message handler:")
        assert records.seen == [
            "KeyboardInterrupt caught in kernel.",
            "Exception in message handler:",
        ]
    finally:
        log.removeHandler(records)
        log.filters.clear()


def test_the_chain_runs_its_notebooks_in_that_kernel():
    with this_python_kernel() as name:
        folder = Path(os.environ["JUPYTER_PATH"].split(os.pathsep)[0]) / "kernels" / name
        argv = json.loads((folder / "kernel.json").read_text())["argv"]
    assert argv[1:3] == ["-m", "lmkit.chain.kernel"] and "{connection_file}" in argv
