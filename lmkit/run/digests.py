"""Content digests: what lmkit reuses is reused only when the digest of what it came from is
unchanged. A prepared cache: its params and its data files (``files_digest``: names and
contents); a stage's outputs (``outputs_digest``); the search study: what a trial's result
depends on (``study_inputs``). What a chain stage ran is compared by ``lmkit.chain.reuse``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from lmkit.run.params import CONTENT_KEYS, NOT_RESULTS, Data, Params

# model keys that act only when the model file is written, not on what is trained
_PACKAGING = ("bias_correction", "recrop")


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
                h.update(f"{f.relative_to(folder)}\t{file_sha1(f)}\n".encode())
    return h.hexdigest()[:length]


def by_contents(value):
    """A ``CONTENT_KEYS`` value as compared: a file named by it as its name and SHA-1 (None when
    the file is missing); any other value (true, false) as it is."""
    if not isinstance(value, str):
        return value
    return {"file": value, "sha1": file_sha1(Path(value)) if Path(value).is_file() else None}


def file_sha1(path: Path) -> str:
    """A file's SHA-1, read once per process while its size, time and inode stay the same."""
    st = Path(path).stat()
    return _hashed(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=100_000)
def _hashed(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """A file's SHA-1, read once per process for a given size, time and inode (the chain digests
    the same data files for the caches and the stages, the same sources for every stage's record)."""
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
        h.update(file_sha1(p).encode())
    return h.hexdigest()[:16]


def _train(params: Params, drop=()) -> dict:
    drop = NOT_RESULTS + tuple(drop)
    return {k: v for k, v in params.train.model_dump().items() if k not in drop}


def data_files(data: Data) -> str | None:
    """A digest of the files a real data set is read from (``data.root`` and
    ``data.extra_train``); None for synthetic faces, which the params alone describe."""
    if data.source == "synthetic":
        return None
    return files_digest([Path(data.root), *(Path(f) for f in data.extra_train)])


def study_inputs(params: Params) -> dict:
    """What one search trial's result depends on: the data, the model, the recipe, the trial's
    budget and the ranges it draws from (not the number of trials, nor train.epochs)."""
    sections = {"data": params.data.model_dump(), "model": params.model.model_dump()}
    for k in CONTENT_KEYS:  # a weights file by its bytes, not only its name
        section, name = k.split(".")
        if section in sections:
            sections[section][name] = by_contents(sections[section][name])
    return {
        "seed": params.seed,
        "data": sections["data"],
        "model": {k: v for k, v in sections["model"].items() if k not in _PACKAGING},
        "train": _train(params, drop=("epochs", "lr", "weight_decay")),
        "search": {
            k: getattr(params.search, k)
            for k in ("epochs_per_trial", "lr_range", "weight_decay_range")
        },
    }
