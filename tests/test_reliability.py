"""A run folder never gives a silently wrong result: edited data, a second chain on the same
folder, resume with other settings, bad params and folders refused before anything runs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lmkit.run import params as P
from lmkit.chain.pipeline import ChainError, preflight, run_chain
from lmkit.data.prepare import prepare
from lmkit.data.readers import write_pts
from lmkit.chain.lock import RunInUse, check_not_in_use, run_lock
from lmkit.run.folder import RunFolder

from tests.conftest import random_landmarks, write_image

ROOT = Path(__file__).resolve().parents[1]


def _300w(root: Path, n_train=4, n_test=2):
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            write_image(root / f"{split}set" / f"{split}{i}.jpg", seed=i)
            write_pts(random_landmarks(68, seed=i), root / f"{split}set" / f"{split}{i}.pts")
    return root


def test_edited_or_added_files_are_prepared_again(tmp_path):
    root = _300w(tmp_path / "data")
    data = P.load(None, {"data.source": "300w", "data.root": str(root)}).data
    logs = []
    first = prepare(data, 0, tmp_path / "cache", logs.append)["train"]
    prepare(data, 0, tmp_path / "cache", logs.append)
    assert any("reusing cache" in line for line in logs)
    fixed = random_landmarks(68, seed=99)
    write_pts(fixed, root / "trainset" / "train0.pts")  # a corrected annotation
    os.utime(root / "trainset" / "train0.pts", ns=(time.time_ns() + 10**9,) * 2)
    write_image(root / "trainset" / "train9.jpg", seed=9)  # and a new photo
    write_pts(random_landmarks(68, seed=9), root / "trainset" / "train9.pts")
    logs.clear()
    again = prepare(data, 0, tmp_path / "cache", logs.append)["train"]
    assert any("the data files changed" in line for line in logs)
    assert len(again) == len(first) + 1
    assert not np.allclose(again.landmarks[0], first.landmarks[0])


def test_the_same_files_with_new_times_are_the_same_data(tmp_path):
    """A data folder copied or restored (every modification time new, the contents the same) is
    not edited data: the cache is reused. One changed byte is edited data."""
    root = _300w(tmp_path / "data")
    data = P.load(None, {"data.source": "300w", "data.root": str(root)}).data
    logs = []
    prepare(data, 0, tmp_path / "cache", logs.append)
    later = time.time_ns() + 10**10
    for f in root.rglob("*"):
        os.utime(f, ns=(later, later))
    logs.clear()
    prepare(data, 0, tmp_path / "cache", logs.append)
    assert any("reusing cache" in line for line in logs) and not any(
        "data files changed" in line for line in logs
    )
    pts = root / "trainset" / "train1.pts"
    pts.write_text(pts.read_text() + "\n")  # the same points, one more byte
    logs.clear()
    prepare(data, 0, tmp_path / "cache", logs.append)
    assert any("the data files changed" in line for line in logs)


@pytest.mark.slow
def test_force_really_prepares_again(tmp_path):
    out = tmp_path / "run"
    tiny = [
        "data.synthetic_train=12",
        "data.synthetic_test=4",
        "model.input_size=32",
        "train.batch_size=4",
    ]
    run = RunFolder(out)
    logs = []
    run_chain("params/quick.yaml", tiny, str(out), log=logs.append, notebooks=("01_prepare",))
    made = (run.root / "data" / "train" / "images.npy").stat().st_mtime_ns
    run_chain(
        "params/quick.yaml", tiny, str(out), log=logs.append, notebooks=("01_prepare",), force=True
    )
    assert any("--force: removed the prepared cache" in line for line in logs)
    assert (run.root / "data" / "train" / "images.npy").stat().st_mtime_ns != made


HOLD = """
import sys, time
from lmkit.chain.lock import run_lock
from lmkit.run.folder import RunFolder
with run_lock(RunFolder(sys.argv[1]), log=lambda _: None):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_chain_on_the_same_folder_is_refused_and_a_killed_holder_taken_over(tmp_path):
    run = RunFolder(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run.root)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUse, match=rf"in use by .* on host .*, PID {holder.pid}, since"):
            run_chain("params/quick.yaml", [], str(run.root), log=lambda _: None)
        with pytest.raises(RunInUse, match=f"PID {holder.pid}"):
            check_not_in_use(run)  # a notebook opened on it by hand
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    logs = []
    with run_lock(run, logs.append):
        assert os.environ["LMKIT_RUN_LOCK"] == str(run.root)
        check_not_in_use(run)  # the chain's own notebooks may open it
    assert any("taking over" in line and str(holder.pid) in line for line in logs)
    assert not (run.root / ".lock.json").exists()


def test_resume_with_other_settings_is_refused_naming_each_key(tmp_path):
    from lmkit.train.config import TrainConfig, model_options, new_model
    from lmkit.train.loop import fit
    from tests.study import STUDY

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
    pts = rng.uniform(10, 50, (12, 194, 2)).astype(np.float32)
    p = P.load(None, {"model.input_size": 32, "train.batch_size": 4, "train.epoch_multiplier": 1})
    cfg = TrainConfig.from_params(p, "cpu", epochs=1, keep_checkpoints=True)
    fit(
        new_model(STUDY.build_network, 194, None, 0, "cpu", **model_options(p)),
        STUDY.train_step,
        (images[:8], pts[:8]),
        (images[8:], pts[8:]),
        cfg,
        out_dir=tmp_path,
        log=lambda _: None,
    )
    other = TrainConfig.from_params(
        P.merge(p, {"model.input_size": 48, "seed": 1}), "cpu", epochs=2
    )
    with pytest.raises(
        ValueError,
        match=r"cannot resume.*input_size: 32 in the checkpoint, 48 now; seed: 0 in the "
        r"checkpoint, 1 now",
    ):
        fit(
            new_model(STUDY.build_network, 194, None, 0, "cpu", **model_options(p)),
            STUDY.train_step,
            (images[:8], pts[:8]),
            (images[8:], pts[8:]),
            other,
            out_dir=tmp_path,
            resume=True,
            log=lambda _: None,
        )
    more = TrainConfig.from_params(p, "cpu", epochs=2)  # only the epochs changed: fine
    hist = fit(
        new_model(STUDY.build_network, 194, None, 0, "cpu", **model_options(p)),
        STUDY.train_step,
        (images[:8], pts[:8]),
        (images[8:], pts[8:]),
        more,
        out_dir=tmp_path,
        resume=True,
        log=lambda _: None,
    )
    assert list(hist["epoch"]) == [1, 2]


def _refused(params: dict, run_dir: Path, match: str):
    start = time.perf_counter()
    with pytest.raises(ChainError, match=match):
        preflight(params, RunFolder(run_dir))
    assert time.perf_counter() - start < 2


def test_bad_folders_and_devices_are_refused_before_any_notebook(tmp_path):
    root = _300w(tmp_path / "w300")
    _refused(
        P.load(None, {"data.source": "300w", "data.root": str(tmp_path / "nowhere")}),
        tmp_path / "r",
        "data.root: .*nowhere is not a folder",
    )
    _refused(
        P.load(None, {"data.source": "helen", "data.root": str(root)}),
        tmp_path / "r",
        r"not in the helen layout \(missing trainnames.txt, annotation\); it looks like the 300w layout",
    )
    _refused(
        P.load(None, {"system.device": "cuda"}), tmp_path / "r", "no CUDA device"
    ) if not __import__("torch").cuda.is_available() else None
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _refused(P.load(None), blocker / "run", "the run folder cannot be written")


@pytest.mark.parametrize(
    "override, match",
    [
        ("model.input_size=7", "ResNet18 needs at least 32 pixels"),
        ("system.device=gpu", "system.device: auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
        ("train.lr=[1e-3", r"override train.lr: the value '\[1e-3' is not valid YAML"),
        ("train.learning_rate=1e-3", "did you mean 'train.lr'"),
    ],
)
def test_bad_params_are_refused_naming_the_key(override, match):
    with pytest.raises(P.ParamsError, match=match):
        P.load(None, [override])


@pytest.mark.slow
def test_a_notebook_run_by_hand_with_other_params_is_not_reused(tmp_path):
    from tests.study import steps

    out = tmp_path / "run"
    tiny = [
        "data.synthetic_train=12",
        "data.synthetic_test=4",
        "model.input_size=32",
        "train.batch_size=4",
    ]
    logs = []
    run_chain("params/quick.yaml", tiny, str(out), log=logs.append, notebooks=("01_prepare",))
    logs.clear()
    run_chain("params/quick.yaml", tiny, str(out), log=logs.append, notebooks=("01_prepare",))
    assert any("01_prepare: reusing" in line for line in logs)
    # 01_prepare run again by hand (as papermill or JupyterLab would) with another validation fraction
    run = RunFolder(out)
    other = P.load("params/quick.yaml", tiny + ["data.val_fraction=0.5"])
    steps.prepare(run, other, log=lambda _: None)
    logs.clear()
    run_chain("params/quick.yaml", tiny, str(out), log=logs.append, notebooks=("01_prepare",))
    assert not any("reusing the earlier output" in line for line in logs)
    assert any(
        "01_prepare: running it again: its outputs are missing or not what it wrote" in line
        for line in logs
    )
    split = P.load(run.params).data.val_fraction
    assert split == 0.2 and len(__import__("json").loads(run.split.read_text())["val"]) == round(
        12 * 0.2
    )


def test_more_epochs_keep_the_search_study():
    from lmkit.train.search import study_name

    base = P.load(None)
    assert study_name(P.load(None, ["train.epochs=7"])) == study_name(
        base
    )  # its finished trials are reused
    assert study_name(P.load(None, ["search.trials=11"])) == study_name(base)
    assert study_name(P.load(None, ["train.loss=l1"])) != study_name(base)


def test_a_last_batch_of_one_image_is_left_out():
    import torch

    from lmkit.train.config import DevicePlan, TrainConfig
    from lmkit.train.loop import batches

    cfg, plan = TrainConfig(batch_size=8, input_size=32), DevicePlan.choose("cpu")
    nine = list(
        batches(
            np.zeros((9, 40, 40, 3), np.uint8),
            np.zeros((9, 2, 2), np.float32),
            torch.arange(9),
            cfg,
            torch.Generator(),
            plan,
            40,
        )
    )
    assert [len(x) for x, _ in nine] == [8]
    ten = list(
        batches(
            np.zeros((10, 40, 40, 3), np.uint8),
            np.zeros((10, 2, 2), np.float32),
            torch.arange(10),
            cfg,
            torch.Generator(),
            plan,
            40,
        )
    )
    assert [len(x) for x, _ in ten] == [8, 2]


def test_too_little_data_is_refused_with_the_numbers(tmp_path):
    _refused(
        P.load(None, {"data.synthetic_train": 11, "train.batch_size": 16}),
        tmp_path / "r",
        "too little data: data.synthetic_train 11 leaves 9 training faces after 2 for validation, fewer than "
        "train.batch_size 16",
    )


def test_notebook_overrides_are_recorded_in_the_run_folder(tmp_path):
    from tests.study import steps

    run = RunFolder(tmp_path / "run")
    P.dump(P.load(None), run.params)
    _, params = steps.open_run(str(run.root), str(run.params), ["train.epochs=3"])
    assert params.train.epochs == 3 and P.load(run.params).train.epochs == 3


def test_caches_are_readable_by_the_group(tmp_path):
    data = P.load(None, {"data.synthetic_train": 6, "data.synthetic_test": 2}).data
    old = os.umask(0o002)
    try:
        prepare(data, 0, tmp_path / "cache", lambda _: None)
    finally:
        os.umask(old)
    assert (tmp_path / "cache" / "train").stat().st_mode & 0o050 == 0o050


@pytest.mark.slow
def test_a_photo_added_after_a_finished_run_is_used_by_the_next_run(tmp_path):
    """The chain's reuse asks the data files too, not only the params."""
    root = _300w(tmp_path / "data", n_train=6, n_test=2)
    tiny = [
        f"data.root={root}",
        "data.source=300w",
        "model.input_size=32",
        "train.batch_size=2",
        "train.epochs=1",
        "search.enabled=false",
        "eval.detector_box=false",
        "data.val_fraction=0.34",
    ]
    out, logs = tmp_path / "run", []
    run_chain(None, tiny, str(out), log=logs.append, notebooks=("01_prepare", "02_hpsearch"))
    write_image(root / "trainset" / "train6.jpg", seed=6)  # a photo and its .pts added
    write_pts(random_landmarks(68, seed=6), root / "trainset" / "train6.pts")
    logs.clear()
    run_chain(None, tiny, str(out), log=logs.append, notebooks=("01_prepare", "02_hpsearch"))
    assert not any("reusing the earlier output" in line for line in logs)
    from lmkit.data.prepare import load_cache

    assert "train6" in load_cache(out / "data" / "train").names
    (root / "trainset" / "train6.pts").unlink()  # and removed again
    (root / "trainset" / "train6.jpg").unlink()
    logs.clear()
    run_chain(None, tiny, str(out), log=logs.append, notebooks=("01_prepare",))
    assert "train6" not in load_cache(out / "data" / "train").names


@pytest.mark.slow
def test_the_flip_test_changed_after_a_run_with_the_bias_correction_packages_the_model_again(
    tmp_path,
):
    """The bias correction is fitted with the flip test, and the model
    file records it, so changing eval.flip_test writes the model file again (a fresh run's, in
    04), from the same trained weights: 03 never reads the flip test and is reused."""
    import torch

    tiny = [
        "data.synthetic_train=40",
        "data.synthetic_test=12",
        "model.input_size=32",
        "train.batch_size=16",
        "train.epochs=1",
        "train.epoch_multiplier=1",
        "search.enabled=false",
        "model.bias_correction=true",
        "train.flip=0.5",
    ]
    out, logs = tmp_path / "run", []
    chain = ("01_prepare", "02_hpsearch", "03_train", "04_evaluate")
    run_chain(
        "params/quick.yaml",
        tiny + ["eval.flip_test=true"],
        str(out),
        log=logs.append,
        notebooks=chain,
    )
    run = RunFolder(out)
    first = torch.load(run.model_file, weights_only=True)
    weights = run.best_checkpoint.read_bytes()
    logs.clear()
    run_chain(
        "params/quick.yaml",
        tiny + ["eval.flip_test=false"],
        str(out),
        log=logs.append,
        notebooks=chain,
    )
    assert any("03_train: reusing" in line for line in logs)
    assert any(
        line.startswith("04_evaluate: running it again: params key eval.flip_test: True -> False")
        for line in logs
    )
    assert run.best_checkpoint.read_bytes() == weights  # the same training, not trained again
    again = torch.load(run.model_file, weights_only=True)
    fresh_dir = tmp_path / "fresh"
    run_chain(
        "params/quick.yaml",
        tiny + ["eval.flip_test=false"],
        str(fresh_dir),
        log=lambda _: None,
        notebooks=chain,
    )
    fresh = torch.load(RunFolder(fresh_dir).model_file, weights_only=True)
    info = {"first": first["info"], "again": again["info"], "fresh": fresh["info"]}
    flip = {k: v["flip_test"] for k, v in info.items()}
    corr = {k: np.asarray(v["correction"]) for k, v in info.items()}
    assert flip == {"first": True, "again": False, "fresh": False}
    np.testing.assert_allclose(corr["again"], corr["fresh"], atol=1e-3)
    assert not np.allclose(corr["again"], corr["first"], atol=1e-3)


@pytest.mark.slow
def test_keys_that_act_only_on_the_model_file_never_train_the_weights_again(small_chain, tmp_path):
    """model.bias_correction and model.recrop act only when 04 writes the model file: 01-03 never
    read them, so they are reused and the weights are not trained again."""
    import torch

    from tests.conftest import SMALL as tiny, copy_run

    run, logs = copy_run(small_chain, tmp_path / "run"), []  # the session's finished SMALL chain
    out, chain = run.root, ("01_prepare", "02_hpsearch", "03_train", "04_evaluate")
    weights, stamp = run.best_checkpoint.read_bytes(), run.best_checkpoint.stat().st_mtime_ns
    packaging = ["model.bias_correction=true", "model.recrop=2"]
    run_chain("params/quick.yaml", tiny + packaging, str(out), log=logs.append, notebooks=chain)
    assert [line.split(":")[0] for line in logs if "reusing the earlier output" in line] == list(
        chain[:3]
    )
    assert any(
        line.startswith("04_evaluate: running it again: params key model.bias_correction")
        for line in logs
    )
    assert (
        run.best_checkpoint.stat().st_mtime_ns == stamp
        and run.best_checkpoint.read_bytes() == weights
    )
    info = torch.load(run.model_file, weights_only=True)["info"]
    assert info["recrop"] == 2 and info["correction"] is not None


@pytest.mark.slow
def test_a_chain_after_a_notebook_run_by_hand_says_what_it_undoes(tmp_path):
    """The next lmkit run names the knob the hand-run notebook had set, and why it
    runs that notebook again, instead of undoing it silently."""
    from tests.study import steps

    out = tmp_path / "run"
    tiny = [
        "data.synthetic_train=12",
        "data.synthetic_test=4",
        "model.input_size=32",
        "train.batch_size=4",
    ]
    run_chain("params/quick.yaml", tiny, str(out), log=lambda _: None, notebooks=("01_prepare",))
    run, params = steps.open_run(
        str(out), "params/quick.yaml", tiny, {"data.val_fraction": 0.5}
    )  # as 01 by hand
    steps.prepare(run, params, log=lambda _: None)
    logs = []
    run_chain("params/quick.yaml", tiny, str(out), log=logs.append, notebooks=("01_prepare",))
    assert any(
        "params differ from the run folder's params.yaml" in line
        and "data.val_fraction: 0.5 -> 0.2" in line
        for line in logs
    )
    assert any(
        line.startswith(
            "01_prepare: running it again: its outputs are missing or not what it wrote"
        )
        for line in logs
    )
