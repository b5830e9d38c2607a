"""When the chain may reuse a stage: only when everything it ran is unchanged.

After a notebook ran, ``record`` keeps in ``run.json``: the digest of its code cells (markdown
and outputs left out), the params keys its cells read with their values, the lmkit modules its
kernel imported with the digests of their sources, the study cells of other notebooks it
executed, the data files (01_prepare), the outputs of the stages before it, and its own outputs.
``changes`` compares each of them with now and says, per file or key, what differs; an empty
list means a fresh run would do exactly what was done. Keys that change where or how training
runs, not its result (``stages.NOT_RESULTS``), and the run's name are not compared.
"""

from __future__ import annotations

from pathlib import Path

from lmkit.run import params as P
from lmkit.study.cells import STUDY_TAG, code_digest, notebooks_dir
from lmkit.run.digests import by_contents, data_files, outputs_digest
from lmkit.run.folder import read_json
from lmkit.chain import stages
from lmkit.chain.reads import WHOLE, file_digest, package_root

_MISSING = "<missing>"


def _ignored(key: str) -> bool:
    section, _, name = key.partition(".")
    return key in stages.NOT_COMPARED or name in stages.NOT_RESULTS.get(section, ())


def _value(params: P.Params, key: str):
    """A key's value as compared now: a leaf, a section (``data``) or the whole params (``*``)."""
    if key in P.CONTENT_KEYS:
        return by_contents(P.value(params, key))
    node = params.model_dump()
    if key == WHOLE:
        return _comparable(node)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return _comparable(node, key) if isinstance(node, dict) else node


def _comparable(value, key: str = "") -> dict:
    """A section (or the whole params) without the keys that are not compared."""
    prefix = f"{key}." if key and key != WHOLE else ""
    return {
        k: by_contents(v) if prefix + k in P.CONTENT_KEYS else v
        for k, v in P.flatten(value).items()
        if not _ignored(prefix + k)
    }


def upstream(run, params: P.Params, name: str) -> str | None:
    """The digest of the outputs of every stage before ``name`` (as they are now)."""
    before = stages.CHAIN[: stages.CHAIN.index(name)]
    return (
        outputs_digest([p for s in before for p in stages.outputs(run, params, s)])
        if before
        else ""
    )


def record(run, params: P.Params, name: str, notebook: Path) -> dict:
    """What stage ``name`` ran, after its notebook ran (its ``reads/<name>.json`` and now)."""
    seen = (
        read_json(run.path("reads", f"{name}.json"), name)
        if run.path("reads", f"{name}.json").exists()
        else {"params": {WHOLE: _value(params, WHOLE)}, "modules": {}, "cells": {}}
    )  # no record: every key counts
    return {
        "code": code_digest(notebook),
        "params": {
            k: (_comparable(v, k) if isinstance(v, dict) else v)
            for k, v in seen["params"].items()
            if not _ignored(k)
        },
        "modules": seen["modules"],
        "cells": seen["cells"],
        "data": data_files(params.data) if stages.stage(name).data_files else None,
        "upstream": upstream(run, params, name),
        "outputs": outputs_digest(stages.outputs(run, params, name)),
    }


def changes(
    kept: dict | None, run, params: P.Params, name: str, notebook: Path, outputs: bool = True
) -> list[str]:
    """What differs between stage ``name`` as ``kept`` (its record) says it ran and now; empty
    when it may be reused. ``outputs``: also check that its outputs are still what it wrote."""
    if not kept:
        return ["it has not completed in this run folder"]
    if "code" not in kept:
        return ["it was recorded by an earlier lmkit, without its code and the params it read"]
    why = []
    if kept["code"] != code_digest(notebook):
        why.append(f"{_shown(notebook)}: its code cells changed")
    for key, old in kept["params"].items():
        new = _value(params, key)
        if isinstance(old, dict) and isinstance(new, dict):
            diff = sorted(
                k for k in old.keys() | new.keys() if old.get(k, _MISSING) != new.get(k, _MISSING)
            )
            if diff:
                why.extend(
                    f"params key {'' if key == WHOLE else key + '.'}{k}: {old.get(k, _MISSING)!r} -> "
                    f"{new.get(k, _MISSING)!r}"
                    for k in diff
                )
        elif old != new:
            why.append(f"params key {key}: {old!r} -> {new!r}")
    root = package_root().parent
    for file, old in kept["modules"].items():
        path = Path(file) if Path(file).is_absolute() else root / file
        now = file_digest(path)
        if now != old:
            why.append(f"{file}: {'removed' if now is None else 'changed'}")
    for cell, old in kept["cells"].items():
        nb_name, _, tag = cell.partition("#")
        path = notebooks_dir() / nb_name
        if not path.exists() or code_digest(path, tag or STUDY_TAG) != old:
            why.append(
                f"{_shown(path)}: its {tag or STUDY_TAG} cells changed (this stage runs them)"
            )
    if stages.stage(name).data_files and kept.get("data") != data_files(params.data):
        why.append(f"data files under {params.data.root} changed (added, removed or edited)")
    if kept.get("upstream") != upstream(run, params, name):
        why.append("the outputs of the stages before it changed")
    if (
        outputs
        and not why
        and kept.get("outputs") != outputs_digest(stages.outputs(run, params, name))
    ):
        why.append("its outputs are missing or not what it wrote (run again by hand?)")
    return why


def _shown(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)
