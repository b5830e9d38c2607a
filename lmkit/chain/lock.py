"""One chain per run folder: the lock ``lmkit run`` holds (host, PID, since), the refusal a
notebook opened by hand gets while a chain works on its folder, and ``environ``."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager

from lmkit.run.folder import RunFolder, write_json

LOCK_ENV = "LMKIT_RUN_LOCK"  # set by `lmkit run` for its own notebooks: the folder it holds


class RunInUse(RuntimeError):
    pass


def _holder(run: RunFolder) -> str:
    try:
        h = json.loads((run.root / ".lock.json").read_text())
        return f"{h['command']!r} on host {h['host']}, PID {h['pid']}, since {h['since']}"
    except (OSError, ValueError, KeyError):
        return "another process (no holder recorded)"


@contextmanager
def run_lock(run: RunFolder, log=print):
    """Hold the run folder for one chain. A second ``lmkit run`` on it is refused, naming the
    holder; a lock left by a killed run is released by the operating system (``filelock``
    uses flock) and taken over, which is logged."""
    from filelock import FileLock, Timeout

    run.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run.root / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunInUse(
            f"{run.root}: in use by {_holder(run)}; wait for it to finish, or choose another --out"
        ) from None
    info_file = run.root / ".lock.json"
    if info_file.exists():
        log(
            f"taking over the run folder from a run that ended without releasing it: {_holder(run)}"
        )
    write_json(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["lmkit", *sys.argv[1:]]),
        },
        info_file,
    )
    try:
        with environ(LOCK_ENV, str(run.root)):
            yield
    finally:
        info_file.unlink(missing_ok=True)
        lock.release()


@contextmanager
def environ(name: str, value: str):
    """``os.environ[name]`` set to ``value`` inside the block, as it was after it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def check_not_in_use(run: RunFolder) -> None:
    """For a notebook opened on its own: refuse a run folder that a chain is working on
    (unless that chain is the one running this notebook)."""
    from filelock import FileLock, Timeout

    if os.environ.get(LOCK_ENV) == str(run.root) or not (run.root / ".lock").exists():
        return
    lock = FileLock(str(run.root / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunInUse(
            f"{run.root}: in use by {_holder(run)}; open the notebook when it has finished"
        ) from None
    lock.release()
