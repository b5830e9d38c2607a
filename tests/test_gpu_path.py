"""The GPU path before it meets a GPU: the precision each card computes (its compute capability
stubbed), the collectives on the training device (an all_reduce that refuses any other tensor),
no host sync in the training step (counted), memory planned before the training set goes to the
device, and the resident set, prefetch thread and bfloat16 autocast forced on the CPU training
like the float32 golden run."""

import sys

import numpy as np
import pytest
import torch

from lmkit.run import params as P
from lmkit.run.folder import RunFolder
from lmkit.study import model as M
from lmkit.train.config import DevicePlan, TrainConfig, cuda_switches, model_options, new_model
from lmkit.train.loop import epoch_sums, fit, place_training_set
from tests.conftest import TINY
from tests.golden import golden_run
from tests.study import STUDY, steps

GPU_PATH = {"system.resident": True, "system.prefetch": True, "system.autocast": "bfloat16"}
# relative, per epoch, against the float32 golden run on the same machine: the training loss (a mean over
# every batch) within 10%; the validation MSE of this 24-face, two-epoch run swings more with the last bits
# (bfloat16 against float32: 18% at the second epoch on an Intel Xeon AVX-512 host, 12% on AMD EPYC)
TOLERANCE = {"train_mse": 0.10, "val_mse": 0.25}

# (compute capability, what auto trains in): bfloat16 from 8.0 (A100, H100), float16 below (V100, T4)
CARDS = [((7, 0), "float16"), ((7, 5), "float16"), ((8, 0), "bfloat16"), ((9, 0), "bfloat16")]


@pytest.mark.parametrize("capability, precision", CARDS)
def test_auto_trains_and_predicts_in_what_the_card_computes(monkeypatch, capability, precision):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(
        torch.cuda, "is_available", lambda: True
    )  # else GradScaler turns itself off
    plan = DevicePlan.choose("cuda:0")  # choosing needs no GPU
    assert (plan.resident, plan.prefetch, plan.autocast, plan.channels_last) == (
        True,
        True,
        precision,
        True,
    )
    assert plan.grad_scaler().is_enabled() == (precision == "float16")
    assert M.inference_precision("cuda:0") == M.PRECISIONS[precision]
    assert M.inference_precision("cuda:0", "none") is None  # the run's own setting wins
    assert DevicePlan.choose("cuda:0", autocast="none").grad_scaler().is_enabled() is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_a_cpu_trains_in_bfloat16_only_where_it_is_native(monkeypatch, native):
    monkeypatch.setattr(M, "cpu_has_bf16", lambda: native)
    plan = DevicePlan.choose("cpu")
    assert (plan.resident, plan.prefetch, plan.autocast) == (
        False,
        False,
        "bfloat16" if native else "none",
    )
    assert M.inference_precision("cpu") is None  # predictions on a CPU in float32
    forced = DevicePlan.choose("cpu", True, True, "float16", False)
    assert (forced.resident, forced.prefetch, forced.autocast, forced.channels_last) == (
        True,
        True,
        "float16",
        False,
    )
    assert forced.grad_scaler().is_enabled()
    with pytest.raises(P.ParamsError, match="system.autocast"):
        P.load(None, {"system.autocast": "int8"})


def test_every_system_key_reaches_the_training_settings():
    forced = {
        "resident": True,
        "prefetch": True,
        "autocast": "float16",
        "channels_last": False,
        "compile": True,
    }
    p = P.load(None, {f"system.{k}": v for k, v in forced.items()})
    cfg = TrainConfig.from_params(p, "cpu")
    assert {k: getattr(cfg, k) for k in forced} == forced
    plan = cfg.plan()
    assert (plan.resident, plan.prefetch, plan.autocast, plan.channels_last) == (
        True,
        True,
        "float16",
        False,
    )


def test_predict_autocasts_to_the_precision_it_is_given(monkeypatch):
    seen = []
    real = M._forward
    monkeypatch.setattr(
        M, "_forward", lambda model, x, dtype: seen.append(dtype) or real(model, x, dtype)
    )
    net = M.build_model(5, pretrained=False)
    crops = np.zeros((2, 40, 40, 3), np.uint8)
    M.predict(net, crops, 32, device="cpu", precision="bfloat16")
    M.predict(net, crops, 32, device="cpu")
    assert seen == [torch.bfloat16, None]


class _OnDevice:
    """torch.distributed's collectives, as NCCL checks them: every tensor on the model's device."""

    def __init__(self, device):
        self.device, self.calls = torch.device(device), []

    def __call__(self, name):
        def collective(tensor, *args, **kwargs):
            if tensor.device != self.device:
                raise RuntimeError(
                    f"{name}: a tensor on {tensor.device}, not on the model's {self.device}"
                )
            self.calls.append(name)

        return collective


def test_every_collective_of_an_epoch_runs_on_the_model_device(monkeypatch):
    """On the meta device, which stands for a GPU: a tensor made on the CPU is refused."""
    fake = _OnDevice("meta")
    monkeypatch.setattr(torch.distributed, "all_reduce", fake("all_reduce"))
    monkeypatch.setattr(torch.distributed, "broadcast", fake("broadcast"))
    net = M.build_model(5, pretrained=False).to("meta")
    sums = torch.zeros(4, dtype=torch.float64, device="meta")
    assert epoch_sums(sums, net, world=2) is sums
    assert fake.calls[0] == "all_reduce" and fake.calls.count("broadcast") == len(
        list(net.buffers())
    )
    with pytest.raises(RuntimeError, match="not on the model's meta"):
        epoch_sums(torch.zeros(4), net, world=2)  # what a CPU tensor would meet under NCCL


def test_more_processes_than_gpus_are_refused_before_launching(monkeypatch):
    from lmkit.chain.launch import check_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_devices(2, "auto")
    with pytest.raises(RuntimeError, match="4 processes need 4 GPUs, one each; this machine has 2"):
        check_devices(4, "auto")
    check_devices(4, "cpu")  # processes on the CPU share its cores


def test_a_training_epoch_reads_from_the_device_a_fixed_few_times(monkeypatch, tmp_path):
    """No sync in the step: the number of reads (item, bool, float, int, tolist, cpu) that lmkit's
    code and 03's study cells make in an epoch does not grow with its steps (torch's own CPU-side
    reads, such as Adam's step count, are not the loop's)."""
    p = P.load(None, TINY | {"system.autocast": "none", "train.epoch_multiplier": 1})
    rng = np.random.default_rng(0)
    val = (
        rng.integers(0, 255, (4, 48, 48, 3), dtype=np.uint8),
        rng.uniform(8, 40, (4, 194, 2)).astype(np.float32),
    )

    def reads(n_images):
        train = (
            rng.integers(0, 255, (n_images, 48, 48, 3), dtype=np.uint8),
            rng.uniform(8, 40, (n_images, 194, 2)).astype(np.float32),
        )
        count = [0]
        for name in ("item", "__bool__", "__float__", "__int__", "tolist", "cpu"):
            real = getattr(torch.Tensor, name)

            def counted(self, *a, _real=real, **k):
                caller = sys._getframe(1).f_code.co_filename
                count[0] += "/lmkit/" in caller or "#study-cell-" in caller
                return _real(self, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)
        net = new_model(STUDY.build_network, 194, None, 0, "cpu", pretrained=False)
        fit(
            net,
            STUDY.train_step,
            train,
            val,
            TrainConfig.from_params(p, "cpu", epochs=1, batch_size=4),
            log=lambda _: None,
        )
        monkeypatch.undo()
        return count[0]

    few, many = reads(8), reads(40)  # 2 steps, then 10
    assert many == few and few <= 6


def test_the_training_set_stays_in_host_memory_when_the_gpu_has_no_room(monkeypatch):
    images = np.random.default_rng(0).integers(0, 255, (5, 40, 40, 3), dtype=np.uint8)
    landmarks = np.zeros((5, 3, 2), np.float32)
    on, lm = place_training_set(images, landmarks, 32, DevicePlan.choose("cpu", resident=True))
    assert isinstance(on, torch.Tensor) and on.dtype == torch.uint8 and isinstance(lm, torch.Tensor)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (images.nbytes, 16 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    lines = []
    off, _ = place_training_set(images, landmarks, 32, DevicePlan.choose("cuda:0"), lines.append)
    assert off is images and "kept in host memory" in lines[0]


def test_the_gpu_path_forced_on_the_cpu_trains_like_the_float32_golden_run(tmp_path):
    """Against float32 on this machine (the golden record is per kind of CPU; test_golden holds it)."""
    expected = golden_run(tmp_path / "float32")
    got = golden_run(tmp_path / "gpu-path", GPU_PATH)
    assert got["train_mse"][-1] < got["train_mse"][0]
    for key, rtol in TOLERANCE.items():
        np.testing.assert_allclose(got[key], expected[key], rtol=rtol)


@pytest.mark.slow  # a training with checkpoints
def test_float16_trains_with_a_gradient_scaler_and_resumes_it(tmp_path):
    from lmkit.data.prepare import prepare, split_train_val
    from lmkit.study.metrics import mean_shape

    p = P.load(
        None,
        TINY | {"system.autocast": "float16", "train.epochs": 2, "train.keep_checkpoints": True},
    )
    tr = prepare(p.data, 0, tmp_path / "cache", lambda _: None)["train"]
    s = split_train_val(len(tr), 0.25, 0)
    train, val = (
        (tr.images[s["train"]], tr.landmarks[s["train"]]),
        (tr.images[s["val"]], tr.landmarks[s["val"]]),
    )
    model = new_model(STUDY.build_network, 194, mean_shape(train[1]), 0, "cpu", **model_options(p))
    hist = fit(
        model,
        STUDY.train_step,
        train,
        val,
        TrainConfig.from_params(p, "cpu"),
        out_dir=tmp_path / "out",
        log=lambda _: None,
    )
    assert (
        np.isfinite(hist["train_mse"]).all()
        and hist["train_mse"].iloc[-1] < hist["train_mse"].iloc[0]
    )
    ckpt = torch.load(tmp_path / "out" / "last.pt", weights_only=False)
    assert ckpt["scaler"]["scale"] > 0  # the loss scale is checkpointed for resume
    lines = []
    more = fit(
        model,
        STUDY.train_step,
        train,
        val,
        TrainConfig.from_params(p, "cpu", epochs=3),
        out_dir=tmp_path / "out",
        resume=True,
        log=lines.append,
    )
    assert len(more) == 3 and any("resuming from" in line for line in lines)


def test_cuda_switches_touch_nothing_on_a_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    cuda_switches("cpu")
    assert torch.backends.cudnn.benchmark is False
    cuda_switches("cuda:0")  # sets the flag only; no GPU needed
    assert torch.backends.cudnn.benchmark is True


def test_a_torchrun_worker_on_a_gpu_machine_uses_nccl_and_its_local_gpu(tmp_path, monkeypatch):
    import torch.distributed as dist

    from lmkit.chain import distributed

    run = RunFolder(tmp_path / "run")
    P.dump(P.load(None, TINY), run.params)
    seen = {}
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: seen.setdefault("gpu", i))
    monkeypatch.setattr(
        dist, "init_process_group", lambda backend: seen.setdefault("backend", backend)
    )
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: None)
    monkeypatch.setattr(
        distributed,
        "train_run",
        lambda run, params, build, step, log: seen.setdefault("device", params.system.device),
    )
    assert distributed.main([str(run.root)]) == 0
    assert seen == {"gpu": 1, "backend": "nccl", "device": "cuda:1"}


@pytest.mark.slow  # a whole chain
def test_a_model_trained_on_the_gpu_path_evaluates_in_float32(tmp_path):
    run = RunFolder(tmp_path / "run")
    params = P.load(None, TINY | GPU_PATH | {"search.enabled": False, "eval.detector_box": False})
    P.dump(params, run.params)
    steps.prepare(run, params, log=lambda _: None)
    steps.hpsearch(run, params, log=lambda _: None)
    lines = []
    steps.train(run, params, log=lines.append)
    assert any("resident on the device, prefetch on, autocast bfloat16" in line for line in lines)
    metrics = steps.evaluate(run, params, log=lambda _: None, peers=False)
    assert np.isfinite(metrics["methods"][steps.METHODS["model"]]["mse_mean"])
    model, _ = steps.load_model(run, params, "cpu")
    assert all(
        p.dtype == torch.float32 for p in model.parameters()
    )  # autocast never changes the weights


@pytest.mark.slow  # two short chains
def test_the_gpu_check_runs_on_a_cpu_labelled_as_such_and_fails_when_a_check_does(
    tmp_path, capsys, monkeypatch
):
    import json

    from benchmarks import gpu_check

    assert gpu_check.main(["--out", str(tmp_path / "check")]) == 0
    assert "NO GPU: a small CPU-sized check" in capsys.readouterr().out
    summary = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    results = {r["check"]: r["result"] for r in summary["rows"]}
    assert results == {
        "speed": "passed",
        "compile": "skipped",
        "chain": "passed",
        "cpu-vs-cuda": "skipped",
        "onnx": "passed",
        "collectives": "passed",
    }
    monkeypatch.setattr(gpu_check, "check_onnx", lambda out: 1 / 0)  # a check that fails
    monkeypatch.setattr(gpu_check, "check_speed", lambda *a, **k: "not measured")
    monkeypatch.setattr(gpu_check, "check_chain", lambda *a: "not run")
    assert gpu_check.main(["--out", str(tmp_path / "check")]) == 1
