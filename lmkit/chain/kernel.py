"""The chain's Jupyter kernel: ipykernel, without one misleading log line.

At the end of every notebook, jupyter_client interrupts the kernel (SIGINT) before it asks it to
shut down. When that signal lands while the kernel is handling a message, ipykernel logs
``KeyboardInterrupt caught in kernel.`` at ERROR level, on a run where nothing went wrong. The
chain's kernel drops that one record (``lmkit run`` reports a real Ctrl-C itself); every other
error of the kernel is still printed.
"""

from __future__ import annotations

import logging

SHUTDOWN_INTERRUPT = "KeyboardInterrupt caught in kernel"


class NotTheShutdownInterrupt(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return SHUTDOWN_INTERRUPT not in record.getMessage()


def quiet_shutdown_interrupt(logger: str = "IPKernelApp") -> None:
    """Drop the shutdown interrupt's record from the kernel application's log (named after its class)."""
    logging.getLogger(logger).addFilter(NotTheShutdownInterrupt())


if __name__ == "__main__":
    from ipykernel.kernelapp import launch_new_instance

    quiet_shutdown_interrupt()
    launch_new_instance()
