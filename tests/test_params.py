from pathlib import Path

import pytest
import yaml

from lmkit.run import params as P

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "params").glob("*.yaml")))
def test_shipped_params_files_load(name):
    p = P.load(ROOT / "params" / name)
    assert p.train.epochs > 0


def test_paper_params_are_the_studys_settings():
    p = P.load(ROOT / "params" / "paper.yaml")
    assert p.data.source == "helen" and p.data.crop_size == 300
    assert p.model.input_size == 256 and p.model.pretrained is True
    assert p.train.batch_size == 64 and p.train.epochs == 100 and p.train.epoch_multiplier == 4
    assert p.search.epochs_per_trial == 10 and p.train.crop_fraction == pytest.approx(245 / 256)


def test_unknown_key_gets_a_did_you_mean(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("train:\n  epoch: 3\n")
    with pytest.raises(
        P.ParamsError, match=r"p\.yaml: unknown key 'train.epoch'; did you mean 'train.epochs'"
    ):
        P.load(f)


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochs=ten", "train.epochs: expected int"),
        ("train.epochs=0", "train.epochs: must be positive"),
        ("train.lr=-1e-3", "train.lr: must be positive"),
        ("data.source=imagenet", "data.source: must be one of"),
        ("search.lr_range=[1e-2, 1e-5]", "search.lr_range: want 0 < low <= high"),
        ("train.crop_fraction=1.5", "train.crop_fraction"),
        ("nonsense", "expected key=value"),
        ("train.edges=[0.3, 0, 0, 0]", "train.edges: item 0 must be less than 0.25"),
        ("train.edges=[0.1]", "train.edges: expected a list of 4 values"),
        ("train.warmup=100", r"train.warmup: must be fewer than train.epochs \(100\)"),
        (
            "train.batch_size=63 system.processes=2",
            r"train.batch_size: 63 must be divisible by system.processes \(2\)",
        ),
        ("system.resident=maybe", "system.resident: auto, true or false"),
        ("system.device=gpu", "system.device: auto, cpu, cuda"),
        ("model.input_size=16", "model.input_size: ResNet18 needs at least 32 pixels"),
        ("ablation.seeds=[1.5]", "ablation.seeds: item 0 expected int"),
        ("eval.thresholds=[]", "eval.thresholds: expected a list of at least 1 value,"),
        ("train.flip=true", "train.flip: expected float"),
        ("model.view=centre", "model.view: must be one of 'whole' or 'train-mean'"),
        (
            "model.bias_correction=true data.split=paper",
            "model.bias_correction: needs data.split clean",
        ),
    ],
)
def test_bad_overrides_are_refused_naming_the_key(override, message):
    """Each message names the key, what the schema wants and what was given."""
    with pytest.raises(P.ParamsError, match=message):
        P.load(None, override.split(" ") if "=[" not in override else [override])


def test_overrides_and_yaml_floats(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("train:\n  lr: 1e-3\n  intensity: [0.5, 2]\ndata:\n  root: ../data\n")
    p = P.load(f, ["train.epochs=3", "search.enabled=false"])
    assert p.train.lr == 1e-3 and p.train.intensity == [0.5, 2.0]
    assert p.train.epochs == 3 and p.search.enabled is False
    assert p.data.root == str((tmp_path.parent / "data").resolve())  # relative to the file


def test_the_docs_table_is_the_schemas():
    """Every key is described once, in lmkit.run.params.Params; docs/params.md shows exactly that
    (regenerate it with python -m lmkit.run.params --docs)."""
    assert set(P.flatten(P.DEFAULTS)) == set(P.DOCS) == set(P.FIELDS)
    assert all(doc and len(doc) > 10 for doc in P.DOCS.values())
    assert P.markdown_table() in (ROOT / "docs" / "params.md").read_text()


def test_defaults_are_the_schemas_everywhere():
    """The training config, the augmentation and the crop convention take their defaults from
    the schema: a default written again elsewhere would drift."""
    import dataclasses
    import inspect

    from lmkit.study.augment import Augment
    from lmkit.data.prepare import annotation_box, write_cache
    from lmkit.train.config import TrainConfig

    flat = P.flatten(P.DEFAULTS)
    checked = 0
    for cls in (TrainConfig, Augment):
        for f in dataclasses.fields(cls):
            if f.name == "device":  # a resolved device, not the params' "auto"
                continue
            for section in ("train", "model"):
                if f"{section}.{f.name}" in flat and f.default is not dataclasses.MISSING:
                    want = flat[f"{section}.{f.name}"]
                    assert f.default == (tuple(want) if isinstance(want, list) else want), (
                        f"{cls.__name__}.{f.name}"
                    )
                    checked += 1
    for fn in (annotation_box, write_cache):
        for name, arg in inspect.signature(fn).parameters.items():
            if f"data.{name}" in flat:
                assert arg.default == flat[f"data.{name}"], f"{fn.__name__}({name})"
                checked += 1
    assert checked >= 20


def test_dump_and_load_round_trip(tmp_path):
    p = P.load(None, ["train.epochs=7"])
    P.dump(p, tmp_path / "params.yaml")
    assert P.load(tmp_path / "params.yaml") == p


def test_base_files_are_read_first(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "name: a\ntrain:\n  epochs: 5\n  lr: 1.0e-2\ndata:\n  root: data\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("base: ../a.yaml\nname: b\ntrain:\n  epochs: 7\n")
    p = P.load(tmp_path / "sub" / "b.yaml")
    assert (p.name, p.train.epochs, p.train.lr) == ("b", 7, 1e-2)
    assert p.data.root == str((tmp_path / "data").resolve())  # relative to the file that says it
    (tmp_path / "a.yaml").write_text("base: sub/b.yaml\n")
    with pytest.raises(P.ParamsError, match="cycle"):
        P.load(tmp_path / "sub" / "b.yaml")


def test_best_recipes_change_only_the_recipe():
    """Each best file is its data set's study file plus recipe keys: same photos, split, seed and
    weights, so the two rows on the results page differ by the recipe alone (the faces of another
    landmark scheme trained beside, ``data.joint_train``, count as recipe: the validation and test
    faces are the study's)."""
    recipe = {
        "data.forehead",
        "data.joint_train",
        "model.input_size",
        "model.head",
        "model.head_init",
        "model.view",
        "model.bias_correction",
        "model.recrop",
        "eval.flip_test",
    }
    recipe_sections = ("train.", "search.")  # the recipe, its budget and its search (or fixed rate)
    flat = P.flatten
    for study_file, best_file in (
        ("paper", "paper-best"),
        ("helen194-cpu", "helen194-best-cpu"),
        ("helen68-cpu", "helen68-best-cpu"),
    ):
        study, best = (
            flat(P.load(ROOT / "params" / f"{study_file}.yaml")),
            flat(P.load(ROOT / "params" / f"{best_file}.yaml")),
        )
        changed = {k for k in study if study[k] != best[k] and k != "name"}
        assert changed and all(k in recipe or k.startswith(recipe_sections) for k in changed), (
            best_file,
            changed,
        )
        assert "train.loss" in changed and "model.head" in changed
    paper = P.load(ROOT / "params" / "paper.yaml")
    assert paper.train.loss == "mse" and paper.train.flip == 0 and paper.train.schedule == "none"


def test_environment_variable_in_a_path(tmp_path, monkeypatch):
    f = tmp_path / "p.yaml"
    f.write_text("data:\n  root: ${LMKIT_TEST_DATA:-fallback}/helen68\n")
    monkeypatch.delenv("LMKIT_TEST_DATA", raising=False)
    assert P.load(f).data.root == str(tmp_path / "fallback" / "helen68")
    monkeypatch.setenv("LMKIT_TEST_DATA", "/srv/faces")
    assert P.load(f).data.root == "/srv/faces/helen68"
    f.write_text("data:\n  root: ${LMKIT_UNSET_VAR}/x\n")
    monkeypatch.delenv("LMKIT_UNSET_VAR", raising=False)
    with pytest.raises(P.ParamsError, match="LMKIT_UNSET_VAR is not set"):
        P.load(f)


def test_lmkit_params_prints_the_resolved_params_and_the_differences_from_the_study(capsys):
    from lmkit.cli import main

    assert main(["params", "params/helen194-best-cpu.yaml"]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out.split("\n# differs")[0])
    assert (
        resolved["train"]["loss"] == "l1" and resolved["data"]["box"] == "study"
    )  # its own key and its base's
    diff = out.split("\n# differs")[1]
    assert "#   train.loss: 'mse' -> 'l1'" in diff and "#   model.pretrained: True -> False" in diff
    assert (
        "data.box" not in diff and "data.root" not in diff
    )  # the study's crop; where the data lie
    assert main(["params", "params/nothing.yaml"]) == 1


def test_every_p_option_of_the_lmkit_command_says_what_it_does():
    """-p has its help text in every sub-command that takes it (lmkit run, ablate, params)."""
    from lmkit.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "command")
    with_p = {
        name: p
        for name, p in sub.choices.items()
        if any("-p" in a.option_strings for a in p._actions)
    }
    assert set(with_p) >= {"run", "ablate", "params"}
    for name, p in with_p.items():
        (opt,) = [a for a in p._actions if "-p" in a.option_strings]
        assert opt.help and "override one param" in opt.help, name


def test_a_weights_file_counts_by_its_bytes_not_its_name(tmp_path):
    """Keys marked contents=True in the schema (the weights file: model.pretrained) name a file whose bytes count: a
    new file at the same path gives the search study another name (and the chain's reuse compares
    the same {file, sha1}); true and false stay as they are."""
    from lmkit.run.digests import by_contents
    from lmkit.train.search import study_name

    assert P.CONTENT_KEYS == {"model.pretrained"}
    weights = tmp_path / "resnet18.pth"
    weights.write_bytes(b"first weights")
    params = P.load(None, {"model.pretrained": str(weights)})
    first, seen = study_name(params), by_contents(str(weights))
    weights.write_bytes(b"other weights, longer")
    assert study_name(params) != first and by_contents(str(weights))["sha1"] != seen["sha1"]
    assert seen["file"] == str(weights) and by_contents(str(tmp_path / "gone.pth"))["sha1"] is None
    assert by_contents(True) is True and study_name(P.load(None)) == study_name(P.load(None))


def test_params_read_as_attributes_and_as_the_old_nested_dict_and_each_read_is_recorded(tmp_path):
    """Params are read-only attributes; a cell written for the dict params (params["train"]["epochs"])
    reads the same value, and in a notebook either way of reading records the key."""
    from lmkit.chain.reads import Recorder

    params = P.load(None, {"train.epochs": 7})
    assert params.train.epochs == params["train"]["epochs"] == 7
    with pytest.raises(KeyError):
        params["train"]["epoch"]
    with pytest.raises(Exception):
        params.train.epochs = 8  # frozen: merge makes a changed copy
    assert P.merge(params, {"train.epochs": 8}).train.epochs == 8 and params.train.epochs == 7
    recorder = Recorder(tmp_path / "reads.json")
    seen = recorder.params(params)
    assert seen["train"]["epochs"] == 7 and seen.model.input_size == params.model.input_size
    assert seen.search.lr_range == params.search.lr_range
    assert recorder.seen == {
        "train.epochs": 7,
        "model.input_size": params.model.input_size,
        "search.lr_range": params.search.lr_range,
    }
    P.merge(seen, {"seed": 1})  # a copy of the whole params reads every key
    assert recorder.seen["*"] == params.model_dump()
