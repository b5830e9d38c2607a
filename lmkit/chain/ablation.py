"""The ablation (notebook 06, ``lmkit ablate``): the study's recipe and each change of it, each
trained and tested by notebooks 03 and 04 themselves, once per seed, in sub-runs of the run
folder (``ablation/<variant>/seed<N>/``) that share its prepared data, split and search winner.
A sub-run is reused as the chain reuses a stage (``lmkit.chain.reuse``); a variant whose training
is the same as an earlier row's (it changes only what follows training) starts from that row's
trained weights."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from lmkit.report import figures
from lmkit.run import params as P
from lmkit.data.faces import load_data
from lmkit.run.progress import emit, quiet
from lmkit.report.predictions import Predictions
from lmkit.run.folder import RunFolder, read_json, write_csv, write_json
from lmkit.chain import reuse


def ablation_variants(params: P.Params) -> list[Path]:
    """The ablation's variant files: ``ablation.variants``, else ``params/ablation/*.yaml`` in the
    order of their leading row numbers (row 10 after row 9, not after row 1)."""
    files = [Path(f) for f in params.ablation.variants]
    if not files:
        folder = Path(__file__).resolve().parents[2] / "params" / "ablation"
        files = sorted(
            folder.glob("*.yaml"),
            key=lambda f: (int(re.match(r"\d*", f.name).group() or 10**9), f.name),
        )
        if not files:
            raise FileNotFoundError(
                f"{folder}: no ablation variants (*.yaml); set ablation.variants"
            )
    return files


def row_changes(files: list[Path]) -> dict[str, str]:
    """Each row's label and what it adds to the row above it (the ablation table's "its changes"):
    every file is a one-file variant of the study's recipe, its changes cumulative."""
    labels, before = {}, {}
    for file in files:
        changes = P.read_changes(file)
        label = changes.pop("name", file.stem)
        labels[label] = (
            ", ".join(f"{k}={v}" for k, v in changes.items() if before.get(k) != v) or "-"
        )
        before = changes
    return labels


def _same_training(earlier: RunFolder, sub: RunFolder, params: P.Params, notebook: Path) -> bool:
    """Whether ``earlier``'s 03_train ran exactly what ``sub``'s would run: its record checked
    against ``sub``'s params, code and inputs."""
    info = earlier.path("run.json")
    kept = read_json(info, "03_train").get("stages", {}).get("03_train") if info.exists() else None
    return bool(kept) and not reuse.changes(kept, sub, params, "03_train", notebook, outputs=False)


def ablation(
    run: RunFolder, params: P.Params, log=print, quiet_notebooks: bool = True
) -> pd.DataFrame:
    """Train and test each variant (a params file: the study's recipe plus a few changes) with
    the run's data, split, model, budget and hyper-parameters (its search winner), once per
    seed of ``ablation.seeds``, by running notebooks 03_train and 04_evaluate on each sub-run.
    Returns the table (also ``ablation/ablation.csv``): per variant the mean, lowest and highest
    of each test metric over the seeds, the best validation MSE and the training minutes;
    ``ablation/runs.csv`` has one line per sub-run.

    Used in: 06_ablation, "Ablation: the study's recipe, then one change at a time"."""
    from lmkit.study.cells import notebook_file
    from lmkit.report.predictions import METHODS
    from lmkit.chain.pipeline import run_stages

    hp = read_json(run.best_hparams, "02_hpsearch")
    a = params.ablation
    budget = {"train.epochs": a.epochs} if a.epochs else {}
    base = {
        "data.cache_dir": str(run.cache_dir(params.data.cache_dir)),
        "eval.detector_box": False,
        "train.resume": False,
        **budget,
    }
    lines, trained, nmes = [], [], {}
    d = load_data(run, params)
    nme_key = "nme_oc_mean" if d.scheme.outer_eye_corners else "nme_io_mean"
    train_nb = notebook_file("03_train")
    files = ablation_variants(params)
    labels = row_changes(files)
    for file in files:
        changes = P.read_changes(file)
        label = changes.pop("name", file.stem)
        slug = re.sub(r"[^a-z0-9]+", "-", file.stem.lower()).strip("-")
        emit(log, "variant", f"--- {label} ({file.name})")
        for seed in a.seeds:
            vp = P.merge(params, {**changes, **base, "seed": seed})
            sub = RunFolder(run.root / "ablation" / slug / f"seed{seed}")
            sub.root.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.split, sub.split)
            write_json(hp, sub.best_hparams)
            info = sub.path("run.json")
            if not (info.exists() and "03_train" in read_json(info, "").get("stages", {})):
                same = next((e for e in trained if _same_training(e, sub, vp, train_nb)), None)
                if same is not None:  # the same training as an earlier row: its weights and record
                    sub.train_dir.mkdir(parents=True, exist_ok=True)
                    for f in ("history.csv", "best.pt"):
                        shutil.copyfile(same.train_dir / f, sub.train_dir / f)
                    shutil.copytree(
                        same.path("notebooks"), sub.path("notebooks"), dirs_exist_ok=True
                    )
                    kept = read_json(same.path("run.json"), "")
                    write_json(
                        {"timings_s": {}, "stages": {"03_train": kept["stages"]["03_train"]}}, info
                    )
                    emit(
                        log,
                        "variant",
                        f"    seed {seed}: the same training as {same.root.parent.name}: its weights reused",
                    )
                else:
                    emit(log, "variant", f"    seed {seed}: training ...")
            run_stages(sub, vp, ("03_train", "04_evaluate"), log=quiet if quiet_notebooks else log)
            trained.append(sub)
            m = read_json(sub.metrics, "04_evaluate")
            row = m["methods"][METHODS["model"]]
            lines.append(
                {
                    "variant": label,
                    "file": file.name,
                    "seed": seed,
                    **row,
                    "best_val_mse": m["best_val_mse"],
                    "train_minutes": m["train_seconds"] / 60,
                }
            )
            nmes.setdefault(label, []).append(Predictions.load(sub.predictions).nme("model", "io"))
            emit(
                log,
                "variant",
                f"    seed {seed}: test {nme_key} {row[nme_key]:.4f}, MSE {row['mse_mean']:.2f} px², "
                f"best val MSE {m['best_val_mse']:.2f} px², {m['train_seconds'] / 60:.1f} min",
            )
    runs = pd.DataFrame(lines)
    write_csv(runs, run.path("ablation", "runs.csv"))
    table = ablation_table(runs, labels)
    write_csv(table, run.path("ablation", "ablation.csv"))
    fig = figures.ced_figure(
        {k: np.concatenate(v) for k, v in nmes.items()},
        params.eval.ced_max,
        f"ablation on {d.dataset} (all seeds)",
    )
    figures.save(fig, run.figure("ablation_ced"))
    figures.plt.close(fig)
    return table


def ablation_table(runs: pd.DataFrame, changes: dict[str, str]) -> pd.DataFrame:
    """One row per variant (in order): mean, lowest and highest over its seeds of each metric."""
    metrics = [c for c in runs.columns if c not in ("variant", "file", "seed")]
    rows = []
    for label, group in runs.groupby("variant", sort=False):
        row = {"variant": label, "changes": changes.get(label, "-"), "seeds": len(group)}
        for c in metrics:
            row[c] = group[c].mean()
            row[f"{c}_min"], row[f"{c}_max"] = group[c].min(), group[c].max()
        rows.append(row)
    return pd.DataFrame(rows)
