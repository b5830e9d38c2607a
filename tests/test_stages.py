"""Each stage declared once (lmkit.stages): what it may read, what its digest covers, what it
reports."""
import json
import threading

import pytest

from lmkit import digests
from lmkit import params as P
from lmkit import progress
from lmkit import stages as S


def test_a_stage_reads_only_what_it_declares_and_the_error_names_the_stage_and_key():
    params = P.load("params/quick.yaml")
    seen = S.for_stage(params, "03_train")
    assert seen["eval"]["flip_test"] == params["eval"]["flip_test"] and seen["train"] == params["train"]
    with pytest.raises(S.UndeclaredParam, match=r"03_train read params key eval\.thresholds, which is not declared"):
        seen["eval"]["thresholds"]
    with pytest.raises(S.UndeclaredParam, match="01_prepare read params key train.epochs"):
        S.for_stage(params, "01_prepare")["train"]["epochs"]
    with pytest.raises(S.UndeclaredParam):  # .get does not hide it behind a default
        S.for_stage(params, "01_prepare").get("model", {})
    assert S.for_stage(params, "06_ablation").to_dict() == params  # the last stage may read everything


@pytest.mark.parametrize("key, value, first", [
    ("data.val_fraction", 0.3, "01_prepare"), ("train.batch_size", 7, "01_prepare"), ("search.trials", 7, "02_hpsearch"), ("train.loss", "l1", "02_hpsearch"),
    ("model.bias_correction", True, "02_hpsearch"), ("model.recrop", 2, "02_hpsearch"), ("eval.flip_test", True, "03_train"),
    ("eval.ced_max", 0.25, "04_evaluate"), ("ablation.seeds", [5], "06_ablation")])
def test_a_changed_key_changes_the_digest_of_the_first_stage_that_declares_it_and_every_later_one(key, value, first):
    params = P.load("params/quick.yaml")
    before, after = digests.stage_digests(params), digests.stage_digests(P.merge(params, {key: value}))
    changed = [s for s in S.CHAIN if before[s] != after[s]]
    assert changed == list(S.CHAIN[S.CHAIN.index(first):])


def test_every_key_is_read_by_some_stage_or_changes_no_result():
    params = P.load("params/quick.yaml")
    declared = S.readable(S.CHAIN[-1])
    for key in P.flatten(params):
        section = key.split(".")[0]
        assert key in declared or section in declared, key


def test_what_changes_no_result_changes_no_digest():
    params = P.load("params/quick.yaml")
    before = digests.stage_digests(params)
    for key, value in [("train.device", "cpu"), ("train.autocast", "none"), ("train.resume", False), ("name", "other")]:
        assert digests.stage_digests(P.merge(params, {key: value})) == before, key


def test_progress_events_are_data_and_their_kinds_are_checked(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    shown, lines = [], []
    with progress.Follow(path, shown.append, interval=0.01) as follow:
        monkeypatch.setenv(progress.ENV, str(path))
        progress.emit(lines.append, "epoch", "[#.] epoch 1 of 2", epoch=1, val_mse=3.5)
        with pytest.raises(ValueError, match="kind 'epochs'"):
            progress.emit(lines.append, "epochs", "a typo")
    assert lines == ["[#.] epoch 1 of 2"]
    assert [e["kind"] for e in follow.events] == ["epoch"] and follow.events[0]["val_mse"] == 3.5
    assert shown == follow.events and json.loads(path.read_text())["epoch"] == 1


def test_the_follower_waits_for_a_line_to_be_complete(tmp_path):
    path = tmp_path / "events.jsonl"
    shown = []
    with progress.Follow(path, shown.append, interval=0.01):
        with open(path, "a") as f:
            f.write('{"kind": "epoch", "message": "half')
            f.flush()
            threading.Event().wait(0.05)
            assert shown == []
            f.write(' a line"}\n')
    assert [e["message"] for e in shown] == ["half a line"]


def test_every_kind_a_stage_declares_exists():
    for s in S.STAGES:
        assert set(s.progress) <= set(progress.KINDS), s.notebook


@pytest.mark.parametrize("key, value", [("model.bias_correction", True), ("model.recrop", 2)])
def test_keys_that_act_when_the_model_file_is_written_leave_the_weights_and_the_search_alone(key, value):
    """A change of these packages the same weights again: neither what training depends on nor a
    search trial's key moves."""
    params = P.load("params/quick.yaml")
    other = P.merge(params, {key: value})
    assert digests.training_inputs(other) == digests.training_inputs(params)
    assert digests.study_inputs(other) == digests.study_inputs(params)
    assert digests.stage_digests(other)["03_train"] != digests.stage_digests(params)["03_train"]
