"""Digests: the one rule for what lmkit may reuse. Everything reused is reused only when its
digest is unchanged:

- a prepared cache: its params and its data files (``files_digest``: names and contents);
  the chain's 01_prepare covers the data files too (``data_files``), so an added, edited or
  removed photo or annotation prepares again and everything after it runs again;
- the search study: what a trial's result depends on (``study_inputs``);
- each notebook of the chain: its params and those of every notebook before it
  (``stage_digests``), and its outputs, which must still be the files it wrote
  (``outputs_digest``): a notebook run again by hand with other params is not reused;
- each ablation variant: the training notebook's digest of the variant's params.

A ``run.json`` records each stage it completed; ``stage_state`` and ``record_stage`` are
the one reading and writing of that record, for the chain and the ablation's sub-runs alike.

The params each notebook depends on are those its stage declares it reads (``lmkit.stages``);
``stage_inputs`` digests exactly those, so what a stage reads and what its digest covers are one
list.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from . import stages as S
from .stages import CHAIN

_NOT_RESULTS = S.NOT_RESULTS["train"]


# keys added after run folders existed: left out of the digests while at their default (which
# is what every run did before them), so those run folders are still reused
_ADDED = {"data": {"box": "landmarks"},
          "model": {"view": "whole", "bias_correction": False, "head": "regression", "recrop": 0},
          "train": {"edges": [0.0, 0.0, 0.0, 0.0], "heatmap_loss": 0.0}, "eval": {"flip_test": False}}


def _section(params: dict, name: str) -> dict:
    added = _ADDED.get(name, {})
    return {k: v for k, v in params[name].items() if k not in added or v != added[k]}


def digest(obj, length: int = 12) -> str:
    """A short SHA-1 of ``obj`` as canonical JSON."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def files_digest(folders: list[Path], length: int = 16) -> str:
    """A digest of every file below ``folders``: its path and its contents. An edited annotation,
    an added or removed photo changes it; a copy of the same files (new modification times, as a
    restored or re-synced data folder has) does not, so the caches and everything trained on them
    are still reused."""
    h = hashlib.sha1()
    for folder in folders:
        for f in sorted(Path(folder).rglob("*")) if Path(folder).is_dir() else []:
            if f.is_file():
                h.update(f"{f.relative_to(folder)}\t{_contents(f)}\n".encode())
    return h.hexdigest()[:length]


def _contents(path: Path) -> str:
    st = path.stat()
    return _hashed(str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=100_000)
def _hashed(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """A file's SHA-1, read once per process for a given size, time and inode (the chain digests
    the same data files for the caches, the stages and the weights' key)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def outputs_digest(paths: list[Path]) -> str | None:
    """A digest of the contents of ``paths``; None when one of them is missing."""
    h = hashlib.sha1()
    for p in sorted(Path(p) for p in paths):
        if not p.is_file():
            return None
        h.update(p.name.encode())
        h.update(_contents(p).encode())
    return h.hexdigest()[:16]


def stage_state(record: dict, stage: str, inputs: str, outputs: list[Path]) -> str:
    """Whether ``stage``, as a ``run.json`` records it (``completed``: the digest of its inputs,
    ``outputs``: of the files it wrote), may be reused: "current"; "inputs changed" (or it
    never completed); "outputs changed" (a file missing, or not what it wrote)."""
    if "completed" not in record and "train" in record:  # an ablation sub-run recorded by lmkit before this form
        record = {"completed": {"03_train": record["train"]}, "outputs": {"03_train": record["outputs"]}}
    if record.get("completed", {}).get(stage) != inputs:
        return "inputs changed"
    if record.get("outputs", {}).get(stage) != outputs_digest(outputs):
        return "outputs changed"
    return "current"


def record_stage(record: dict, stage: str, inputs: str, outputs: list[Path]) -> dict:
    """``record`` (a ``run.json``'s content) with ``stage`` completed on ``inputs``, its
    ``outputs`` digested as they are now: what ``stage_state`` checks later."""
    return {**record, "completed": {**record.get("completed", {}), stage: inputs},
            "outputs": {**record.get("outputs", {}), stage: outputs_digest(outputs)}}


def _train(params: dict, drop=()) -> dict:
    drop = _NOT_RESULTS + tuple(drop) + (("lr", "weight_decay") if params["search"]["enabled"] else ())
    return {k: v for k, v in _section(params, "train").items() if k not in drop}  # with the search on, it picks lr and decay


def data_files(data: dict) -> str | None:
    """A digest of the files a real data set is read from (``data.root`` and
    ``data.extra_train``); None for synthetic faces, which the params alone describe."""
    if data["source"] == "synthetic":
        return None
    return files_digest([Path(data["root"]), *(Path(f) for f in data["extra_train"])])


# model keys that act only when the model file is written (package_model), not on training
_PACKAGING = ("bias_correction", "recrop")


def without_packaging(params: dict) -> dict:
    """``params`` with the keys that act only when the model file is written at what a run
    without them does: what the stages before the model file (the search, the weights) saw."""
    return {**params, "model": {**params["model"], **{k: _ADDED["model"][k] for k in _PACKAGING}}}


def training_inputs(params: dict) -> dict:
    """What the trained weights (``best.pt``, ``history.csv``) depend on, besides the data and the
    search: the model and the recipe, not what is fitted when the model file is written. A
    change of those alone packages the same weights again (``steps.train``)."""
    return {"model": {k: v for k, v in _section(params, "model").items() if k not in _PACKAGING},
            "train": _train(params)}


def study_inputs(params: dict) -> dict:
    """What one search trial's result depends on: the data, the model, the recipe, the trial's
    budget and the ranges it draws from (not the number of trials, nor train.epochs)."""
    return {"seed": params["seed"], "data": _section(params, "data"),
            "model": {k: v for k, v in _section(params, "model").items() if k not in _PACKAGING},
            "train": _train(params, drop=("epochs", "lr", "weight_decay")),
            "search": {k: params["search"][k] for k in ("epochs_per_trial", "lr_range", "weight_decay_range")}}


def stage_inputs(params: dict, stage: str) -> dict:
    """The params a notebook's outputs depend on, besides the notebooks before it: the keys its
    stage declares (``lmkit.stages``), without those that change no result (where training runs;
    with the search on, the learning rate and decay it picks) and, at their default, those added
    after run folders existed; and the data files where the stage reads them."""
    declared = S.stage(stage)
    out = {}
    for key in declared.reads:
        section, _, name = key.partition(".")
        if name:
            value = params[section][name]
            if _ADDED.get(section, {}).get(name, object()) != value:
                out[key] = value
        elif section == "train":
            out[key] = _train(params)
        elif isinstance(params[section], dict):
            out[key] = _section(params, section)
        else:
            out[key] = params[section]
    if declared.data_files:
        files = data_files(params["data"])
        if files:
            out["files"] = files
    return out


def stage_digests(params: dict, stages=CHAIN) -> dict[str, str]:
    """A digest per notebook of its inputs and those of every notebook before it."""
    out, previous = {}, ""
    last = max(CHAIN.index(s) for s in stages)
    for stage in CHAIN[: last + 1]:  # a stage's digest reads only its own params and the earlier stages'
        previous = digest([previous, stage_inputs(params, stage)])
        if stage in stages:
            out[stage] = previous
    return out
