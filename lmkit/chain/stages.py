"""The stages of the chain, each declared once: its notebook, the files it writes and the
progress it reports. Everything that needs to know about a stage reads it here: the chain
(order, outputs, progress, reuse), the ablation (which stages a sub-run repeats) and the report
(the notebooks it links). What a stage reads is not declared: it is recorded while the stage
runs (``lmkit.chain.reads``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmkit.run import params as P


@dataclass(frozen=True)
class Stage:
    notebook: str  # notebooks/<notebook>.ipynb, and the stage's name
    outputs: tuple[str, ...]  # the files it writes (RunFolder attributes or paths; see ``outputs``)
    progress: tuple[str, ...]  # the kinds of progress event it reports (lmkit.run.progress)
    data_files: bool = False  # its result depends on the data files too (digests.data_files)


STAGES = (
    Stage(
        "01_prepare",
        ("split", "cache/train/manifest.json", "cache/test/manifest.json"),
        ("prepare", "skipped", "split"),
        data_files=True,
    ),
    Stage("02_hpsearch", ("best_hparams",), ("trial", "search")),
    Stage("03_train", ("history", "best_checkpoint"), ("epoch", "resume", "launch", "checkpoint")),
    Stage(
        "04_evaluate",
        ("model_file", "metrics", "predictions"),
        ("calibration", "correction", "model_file", "evaluate"),
    ),
    Stage("05_figures", ("figures/*.png",), ()),
    Stage("06_ablation", ("ablation/ablation.csv",), ("variant",)),
)
BY_NAME = {s.notebook: s for s in STAGES}
CHAIN = tuple(s.notebook for s in STAGES)
NOTEBOOKS = CHAIN[:5]  # what lmkit run runs; the ablation is lmkit ablate
NOT_RESULTS = {
    "train": P.NOT_RESULTS,
    "system": tuple(P.System.model_fields),
}  # keys whose values change no result (lmkit.run.params says which)
NOT_COMPARED = ("name",)  # read anywhere, compared nowhere: the run's name changes no result


def stage(name: str) -> Stage:
    if name not in BY_NAME:
        raise KeyError(f"unknown stage {name!r}; the chain: {', '.join(CHAIN)}")
    return BY_NAME[name]


def outputs(run, params: P.Params, name: str) -> list[Path]:
    """The files stage ``name`` wrote; reused only while they are still what it wrote."""
    cache = run.cache_dir(params.data.cache_dir)
    found = []
    for out in stage(name).outputs:
        if out.startswith("cache/"):
            found.append(cache / out.removeprefix("cache/"))
        elif out == "figures/*.png":  # the ablation's figure is 06's
            found.extend(
                sorted(
                    p
                    for p in run.root.joinpath("figures").glob("*.png")
                    if p.stem != "ablation_ced"
                )
            )
        elif "/" in out:
            found.append(run.root / out)
        else:
            found.append(getattr(run, out))
    return found
