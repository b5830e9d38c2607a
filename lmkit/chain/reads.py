"""What a notebook read and ran, recorded while it runs, so that the chain reuses a stage only
when all of it is unchanged (``lmkit.chain.reuse``):

- every params key a cell read, with its value (``RecordingParams``): a cell may read any key,
  and the record covers exactly those it did;
- every lmkit module the kernel imported, with a digest of its source file;
- the tagged study cells of another notebook it executed (``lmkit.study.cells.study``).

``open_run`` (the first code cell of every notebook) starts the record; it is written to
``reads/<stage>.json`` of the run folder after every cell (IPython's ``post_run_cell``), and at
the end of a plain Python process.
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path

from pydantic import BaseModel

from lmkit.run.digests import file_sha1

WHOLE = "*"  # a record entry for "the whole params": something iterated over all of them


class RecordingParams:
    """The run's params (a read-only ``Params``), read the same way (``params.train.epochs``),
    noting each key read: a leaf as ``section.key``; a section dumped or copied as a whole
    (``model_dump``, a ``merge``, a pickle to another process) as ``section``, or ``*`` for all."""

    __slots__ = ("_values", "_seen", "_path")

    def __init__(self, values: BaseModel, seen: dict, path: str = ""):
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_seen", seen)
        object.__setattr__(self, "_path", path)

    def _note(self, key: str, value) -> None:
        if key not in self._seen:
            self._seen[key] = value

    def __getattr__(self, name: str):
        value = getattr(self._values, name)
        if isinstance(value, BaseModel):
            return RecordingParams(value, self._seen, f"{self._path}{name}.")
        if name in type(self._values).model_fields:
            self._note(f"{self._path}{name}", list(value) if isinstance(value, tuple) else value)
        return value

    def __getitem__(
        self, name: str
    ):  # params["train"]["epochs"], as cells written for dict params read
        if name not in type(self._values).model_fields:
            raise KeyError(name)
        return self.__getattr__(name)

    def __setattr__(self, name, value):
        raise TypeError(
            f"params are read-only: use lmkit.run.params.merge(params, {{'{self._path}{name}': ...}})"
        )

    def model_dump(self, **kwargs) -> dict:
        self._note(self._path.rstrip(".") or WHOLE, self._values.model_dump())
        return self._values.model_dump(**kwargs)  # the caller's own copy: the record stays as read

    def model_copy(self, **kwargs):
        self.model_dump()
        return self._values.model_copy(**kwargs)

    def __eq__(self, other):
        return self.model_dump() == (other.model_dump() if hasattr(other, "model_dump") else other)

    __hash__ = None

    def __repr__(self) -> str:
        return f"RecordingParams({self._values!r})"

    def __reduce__(self):  # pickled (to another process) as the Params it reads
        self.model_dump()
        return (_same, (self._values,))


def _same(value):
    return value


def file_digest(path: Path) -> str | None:
    """A source file's digest (``digests.file_sha1``); None when it is gone."""
    try:
        return file_sha1(path)[:16]
    except OSError:
        return None


def package_root() -> Path:
    return Path(__file__).resolve().parents[1]


def imported_modules() -> dict[str, str]:
    """Every lmkit module imported in this process: its file (relative to the project root,
    e.g. ``lmkit/study/losses.py``) and the digest of its source."""
    root = package_root().parent
    out = {}
    for name, module in list(sys.modules.items()):
        if name != "lmkit" and not name.startswith("lmkit."):
            continue
        file = getattr(module, "__file__", None)
        if file:
            path = Path(file).resolve()
            rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
            out[rel] = file_digest(path)
    return out


class Recorder:
    """One notebook's record: the params it read, the modules and study cells it ran."""

    def __init__(self, path: Path):
        self.path, self.seen, self._written = Path(path), {}, None

    def params(self, values: BaseModel) -> RecordingParams:
        return RecordingParams(values, self.seen)

    def snapshot(self) -> dict:
        from lmkit.study.cells import loaded

        return {
            "params": dict(sorted(self.seen.items())),
            "modules": dict(sorted(imported_modules().items())),
            "cells": loaded(),
        }

    def flush(self, *_) -> None:
        from lmkit.run.folder import write_json

        record = self.snapshot()
        if record != self._written:
            write_json(record, self.path)
            self._written = record


_current: Recorder | None = None


def start(path: Path) -> Recorder:
    """Start recording into ``path``, replacing the record this process kept before (a notebook
    whose first cell is run again starts afresh)."""
    global _current
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if _current is not None and shell is not None:
        try:
            shell.events.unregister("post_run_cell", _current.flush)
        except ValueError:
            pass
    _current = Recorder(path)
    if shell is not None:
        shell.events.register("post_run_cell", _current.flush)
    else:
        atexit.register(_current.flush)
    return _current
