"""lmkit ablate: variants are params files, the first row is the study's recipe whatever the
run's params, every row runs once per seed, and nothing is trained twice."""

import pytest
import pandas as pd

from lmkit.run import params as P
from tests.study import steps
from lmkit.run.folder import RunFolder
from lmkit.chain.ablation import ablation_variants

from .conftest import TINY


@pytest.mark.slow
def test_ablation_rows_are_params_files_with_seeds(tmp_path):
    shipped = ablation_variants(P.load(None))
    study = shipped[0]
    assert study.name == "1-study.yaml"
    rows = [int(f.name.split("-")[0]) for f in shipped]
    assert rows == list(range(1, len(shipped) + 1)) and len(shipped) >= 10  # row 10 after row 9
    for f in shipped:  # every shipped row loads on top of the run's params, whatever its head
        P.load(f)
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.yaml").write_text(f"base: {study}\n")
    (tmp_path / "v" / "b.yaml").write_text(
        "base: a.yaml\nname: + flip test\neval:\n  flip_test: true\n"
    )
    (tmp_path / "v" / "c.yaml").write_text(
        "base: b.yaml\nname: + correction\nmodel:\n  bias_correction: true\n  recrop: 2\n"
    )
    run = RunFolder(tmp_path / "run")
    # the run itself uses another recipe: the study row must still be the study's
    params = P.load(
        None,
        TINY
        | {
            "search.enabled": False,
            "train.loss": "l1",
            "train.schedule": "cosine",
            "model.view": "train-mean",
            "model.bias_correction": True,
            "ablation.variants": [str(tmp_path / "v" / f"{v}.yaml") for v in "abc"],
            "ablation.epochs": 1,
        },
    )
    P.dump(params, run.params)
    steps.prepare(run, params, log=lambda _: None)
    steps.hpsearch(run, params, log=lambda _: None)
    lines = []
    table = steps.ablation(run, params, log=lines.append)

    assert list(table["variant"]) == ["study recipe", "+ flip test", "+ correction"] and list(
        table["seeds"]
    ) == [2, 2, 2]
    assert table.loc[1, "changes"] == "eval.flip_test=True"
    sub = P.load(run.root / "ablation" / "a" / "seed0" / "params.yaml")
    assert (sub.train.loss, sub.train.schedule, sub.train.epochs, sub.seed) == ("mse", "none", 1, 0)
    assert (sub.model.view, sub.model.bias_correction) == ("whole", False)
    assert P.load(run.root / "ablation" / "a" / "seed1" / "params.yaml").seed == 1
    runs = pd.read_csv(run.root / "ablation" / "runs.csv")
    assert len(runs) == 6
    study_rows = runs[runs["variant"] == "study recipe"]
    assert table.loc[0, "mse_mean"] == study_rows["mse_mean"].mean()
    assert table.loc[0, "mse_mean_min"] == study_rows["mse_mean"].min()
    assert study_rows["mse_mean"].nunique() == 2  # two seeds, two trainings
    # the flip-test row changes evaluation only, the correction row only the model file: both reuse the
    # study row's training of the same seed
    assert sum("training ..." in line for line in lines) == 2
    assert sum("the same training as a" in line for line in lines) == 4
    a0, b0 = (
        pd.read_csv(run.root / "ablation" / v / "seed0" / "train" / "history.csv")
        for v in ("a", "b")
    )
    pd.testing.assert_frame_equal(a0, b0)
    # run again: everything is reused (no model file written again); a changed variant file
    # trains that variant again
    models = sorted((run.root / "ablation").glob("*/seed*/train/model.pt"))
    written = {m: m.stat().st_mtime_ns for m in models}
    assert len(models) == 6
    steps.ablation(run, params, log=lambda _: None)
    assert {m: m.stat().st_mtime_ns for m in models} == written
    (tmp_path / "v" / "a.yaml").write_text(f"base: {study}\ntrain:\n  rotation: 5.0\n")
    steps.ablation(run, params, log=lambda _: None)
    again = [m.parts[-4] for m in models if m.stat().st_mtime_ns != written[m]]
    assert sorted(again) == ["a", "a", "b", "b", "c", "c"]  # b and c follow a's training


# keys the run supplies to every ablation row (its data, model size, budget, device plan, search winner)
RUN_KEYS = {
    "model.input_size",
    "model.pretrained",
    "model.head_init",
    "system.compile",
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.weight_decay",
    "train.epoch_multiplier",
    "system.device",
    "system.resident",
    "system.prefetch",
    "system.autocast",
    "system.channels_last",
    "system.processes",
    "train.resume",
    "train.keep_checkpoints",
    "eval.thresholds",
    "eval.ced_max",
    "eval.detector_box",
    "model.detector",
    "eval.ert",  # the classical peer: the run's, trained once for every row's faces
    "eval.ert_trees",
    "eval.ert_cascades",
}  # the detector rows' face detector: the run's (the ablation scores annotation crops)


def test_the_study_row_pins_every_recipe_key_to_the_studys_value():
    """A recipe key added to the schema must be pinned in 1-study.yaml (at the study's value, the
    default) or be named here as one the run supplies: the study row stays the study's recipe."""
    from pathlib import Path

    from lmkit.run import params as P

    root = Path(__file__).resolve().parents[1] / "params" / "ablation"
    pinned = P.flatten(P.read_changes(root / "1-study.yaml"))
    recipe = {k for k in P.FIELDS if k.split(".")[0] in ("model", "train", "eval")} - RUN_KEYS
    assert recipe - set(pinned) == set(), "recipe keys the study row leaves to the run"
    defaults = P.flatten(P.DEFAULTS)
    assert all(pinned[k] == defaults[k] for k in recipe)  # every default is the study's
    later = [P.flatten(P.read_changes(f, own=True)) for f in sorted(root.glob("*.yaml"))[1:]]
    # later rows change recipe keys only (a heatmap head cannot start at the mean shape: its row says so)
    assert all(
        set(c) - {"name"} - ({"model.head_init"} if "model.head" in c else set()) <= recipe
        for c in later
    )


def test_shipped_rows_are_chained_and_name_what_each_adds():
    """Each row's file holds only its own change, its base the row before it (mmpose's one-line
    variants); the table's "its changes" are what a row adds to the row above."""
    import yaml

    from lmkit.chain.ablation import row_changes

    shipped = ablation_variants(P.load(None))
    for before, f in zip(shipped, shipped[1:]):
        assert yaml.safe_load(f.read_text())["base"] == before.name, f.name
        own = P.flatten(P.read_changes(f, own=True))
        assert own.keys() - {"name"} and all(
            P.flatten(P.read_changes(before)).get(k) != v for k, v in own.items()
        ), f.name
    labels = row_changes(shipped)
    assert labels["+ cosine schedule"] == "train.schedule=cosine"
    assert labels["+ heatmap regulariser"] == "train.heatmap_loss=100.0"
    assert labels["+ heatmap head"] == "model.head=heatmap, model.head_init=default"
    assert "train.loss=mse" in labels["study recipe"]
