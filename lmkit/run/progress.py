"""Progress events: how a stage is getting on, as data rather than log wording.

A step reports progress with ``emit(log, kind, message, **data)``: the message goes to ``log``
(the notebook's output) as any other line, and, when the chain runs the notebook, the event
(its kind, message and data) is appended as one JSON line to the file named by
``$LMKIT_PROGRESS``, which ``lmkit run`` sets for the notebook's kernel and follows while the
notebook runs. Rewording a message changes nothing a program reads; a kind that is not in
``KINDS`` is an error, and each stage declares the kinds it reports (``lmkit.stages``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

ENV = "LMKIT_PROGRESS"
KINDS = {
    "prepare": "a split's cache prepared or reused",
    "skipped": "a face left out of preparation, with its reason",
    "split": "the training / validation split",
    "trial": "a search trial finished (lr, weight decay, best validation MSE)",
    "search": "the search's state: trials already complete, waiting, disabled",
    "epoch": "a training epoch finished (losses, seconds)",
    "resume": "training continues from a checkpoint, or a half-written file was removed",
    "checkpoint": "training finished: the checkpoints kept and removed",
    "launch": "data-parallel processes started",
    "calibration": "the face detector's box calibration fitted",
    "correction": "the bias correction fitted",
    "model_file": "the model file written",
    "evaluate": "a method scored",
    "variant": "an ablation row or seed started, reused or scored",
}


def quiet(message: str) -> None:
    """A ``log`` that reports nothing, neither the message nor the event (a search trial's epochs,
    an ablation sub-run's training, the ranks of data-parallel training other than the first).

    Used in: 02_hpsearch, "The objective"."""


def emit(log, kind: str, message: str, **data) -> None:
    """``message`` to ``log``; the event to ``$LMKIT_PROGRESS`` when it is set (unless ``log``
    is ``quiet``)."""
    if kind not in KINDS:
        raise ValueError(f"progress event kind {kind!r}: not one of {', '.join(KINDS)}")
    if log is quiet:
        return
    log(message)
    path = os.environ.get(ENV)
    if path:
        line = json.dumps(
            {"time": time.time(), "kind": kind, "message": message, **data}, default=str
        )
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class Follow:
    """Follow an events file while a notebook runs: each new event's message to ``show``
    (from a background thread, every ``interval`` seconds and once more at the end)."""

    def __init__(self, path: Path, show, interval: float = 0.5):
        self.path, self.show, self.interval = Path(path), show, interval
        self.events: list[dict] = []
        self._offset, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Follow":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._read()

    def _read(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[
            : data.rfind(b"\n") + 1
        ]  # a line still being written waits for the next read
        self._offset += len(complete)
        for line in complete.decode("utf-8").splitlines():
            event = json.loads(line)
            self.events.append(event)
            self.show(event)
