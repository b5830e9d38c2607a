"""The stages of the chain, each declared once: its notebook, the function that does its work,
the params it may read, the files it writes and the progress it reports.

Everything that needs to know about a stage reads it here: the chain (``pipeline``: order,
outputs, progress), reuse (``digests.stage_inputs``: a stage's digest covers exactly the params
it declares, and those of every stage before it), the notebooks (``steps.open_run`` hands each
one only the params its stage may read), the ablation (which stages a sub-run repeats) and the
report (the notebooks it links).

A stage reads its own params and those of the stages before it; reading any other key raises
``UndeclaredParam`` (``StageParams``), so a digest cannot miss what a stage reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    notebook: str  # notebooks/<notebook>.ipynb, and the stage's name
    function: str  # what does its work, in lmkit.steps
    reads: tuple[str, ...]  # params it may read besides those of the stages before it: "section" or "section.key"
    outputs: tuple[str, ...]  # the files it writes (RunFolder attributes or paths; see ``outputs``)
    progress: tuple[str, ...]  # the kinds of progress event it reports (lmkit.progress)
    data_files: bool = False  # its result depends on the data files too (digests.data_files)


STAGES = (
    Stage("01_prepare", "prepare", ("seed", "data", "train.batch_size"), ("split", "cache/train/manifest.json", "cache/test/manifest.json"),
          ("prepare", "skipped", "split"), data_files=True),
    Stage("02_hpsearch", "hpsearch", ("search", "model", "train"), ("best_hparams",), ("trial", "search")),
    Stage("03_train", "train", ("eval.flip_test",), ("history", "model_file"),
          ("epoch", "resume", "launch", "calibration", "correction", "model_file")),
    Stage("04_evaluate", "evaluate", ("eval",), ("metrics", "predictions"), ("evaluate",)),
    Stage("05_figures", "make_figures", (), ("figures/*.png",), ()),
    Stage("06_ablation", "ablation", ("ablation",), ("ablation/ablation.csv",), ("variant",)),
)
BY_NAME = {s.notebook: s for s in STAGES}
CHAIN = tuple(s.notebook for s in STAGES)
NOTEBOOKS = CHAIN[:5]  # what lmkit run runs; the ablation is lmkit ablate
# train keys that do not change what is trained: where and how it runs (the device plan: autocast
# changes the last digits, as another device does), and whether it continues a checkpoint
NOT_RESULTS = {"train": ("device", "resume", "resident", "prefetch", "autocast", "channels_last")}
EVERY_STAGE = ("name",)  # read anywhere, in no digest: the run's name changes no result


def stage(name: str) -> Stage:
    if name not in BY_NAME:
        raise KeyError(f"unknown stage {name!r}; the chain: {', '.join(CHAIN)}")
    return BY_NAME[name]


def readable(name: str) -> tuple[str, ...]:
    """Every params key or section the stage ``name`` may read: its own and the earlier stages'."""
    keys: list[str] = list(EVERY_STAGE)
    for s in STAGES[: CHAIN.index(stage(name).notebook) + 1]:
        keys.extend(s.reads)
    return tuple(keys)


def outputs(run, params: dict, name: str) -> list[Path]:
    """The files stage ``name`` wrote; reused only while they are still what it wrote."""
    cache = run.cache_dir(params["data"]["cache_dir"])
    found = []
    for out in stage(name).outputs:
        if out.startswith("cache/"):
            found.append(cache / out.removeprefix("cache/"))
        elif out == "figures/*.png":  # the ablation's figure is 06's
            found.extend(sorted(p for p in run.root.joinpath("figures").glob("*.png") if p.stem != "ablation_ced"))
        elif "/" in out:
            found.append(run.root / out)
        else:
            found.append(getattr(run, out))
    return found


class UndeclaredParam(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class StageParams(dict):
    """A stage's view of the params: the keys it declares (``readable``) and nothing else.
    Reading another key raises ``UndeclaredParam`` naming the stage and the key, instead of
    a result its digest does not cover."""

    def __init__(self, values: dict, stage_name: str, allowed, path: str = ""):
        self.stage_name, self.path = stage_name, path
        self._hidden = set()
        kept = {}
        for k, v in values.items():
            key = f"{path}{k}"
            if key in allowed:  # the whole key or section
                kept[k] = v
            elif isinstance(v, dict) and any(a.startswith(f"{key}.") for a in allowed):
                kept[k] = StageParams(v, stage_name, allowed, f"{key}.")
            else:
                self._hidden.add(k)
        super().__init__(kept)

    def __missing__(self, k):
        what = "is not declared" if k in self._hidden else "does not exist"
        raise UndeclaredParam(f"stage {self.stage_name} read params key {self.path}{k}, which {what} for it in "
                              f"lmkit.stages (it may read: {', '.join(readable(self.stage_name))})")

    def get(self, k, default=None):
        if k in self._hidden:
            return self[k]
        return super().get(k, default)

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, StageParams) else v for k, v in self.items()}


def for_stage(params: dict, name: str) -> StageParams:
    """``params`` as stage ``name`` may read them."""
    return StageParams(params, stage(name).notebook, set(readable(name)))
