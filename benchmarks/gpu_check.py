"""The one-command GPU check: does lmkit's GPU path run right, and how fast?

    python -m benchmarks.gpu_check [--out reports/gpu-check]

Each check below runs on the current device, in this order, and ends in one row of a table
(passed, FAILED or skipped, what it measured); the command exits non-zero when any check fails or
misses its target. On one H100 the whole takes a few minutes (under 10).

1. speed: ``benchmarks.speed`` at 256x256, batch 64, in each precision (none, bfloat16, float16;
   float32 alone on a CPU):
   the real loop (``fit`` itself) against the model alone, (b)/(a) at least 0.9 on a GPU;
2. compile: the heatmap head with the DSNT regulariser under ``torch.compile`` (speed, (b)/(a));
3. chain: a short chain on synthetic faces (``params/paper.yaml``'s recipe, 256 px) with
   ``train.keep_checkpoints``, then resumed for one more epoch (``train.resume``);
4. cpu-vs-cuda: the model file's predictions on the CPU and on the GPU within 0.5 px (crop pixels);
5. onnx: ``lmkit export --format onnx`` run by onnxruntime within 0.5 px of PyTorch on the CPU;
6. collectives: a one-process process group (NCCL on a GPU, gloo on a CPU) through the loop's
   own ``epoch_sums``, its tensors on the training device.

Without a GPU it runs a small CPU-sized version of the same checks, clearly labelled (64 px, few
faces and epochs; compile and cpu-vs-cuda skipped; no speed target): it checks the path, not the
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

TARGET_RATIO, MAX_PX = 0.9, 0.5
ROOT = Path(__file__).resolve().parents[1]


def chain_overrides(gpu: bool) -> list[str]:
    size = (
        ["data.synthetic_train=600", "data.synthetic_test=64", "model.input_size=256"]
        if gpu
        else ["data.synthetic_train=64", "data.synthetic_test=12", "model.input_size=64"]
    )
    return [
        "data.source=synthetic",
        "data.root=null",
        "model.pretrained=false",
        "train.epochs=2",
        f"train.batch_size={64 if gpu else 16}",
        "train.epoch_multiplier=1",
        "train.keep_checkpoints=true",
        "search.enabled=false",
        "eval.detector_box=false",
        *size,
    ]


def check_speed(gpu: bool, out: Path, head: str = "regression", compile: bool = False) -> str:
    from benchmarks import speed

    if gpu:  # each precision at the study's size
        args = ["--sizes", "256", "--batches", "64", "--steps", "4", "--rounds", "3"]
        args += ["--autocasts", "none", "bfloat16", "float16"] if head == "regression" else []
    else:  # float32 only: a CPU without native bfloat16 emulates the others, slowly
        args = [
            "--sizes",
            "32",
            "--batches",
            "8",
            "--steps",
            "2",
            "--rounds",
            "1",
            "--autocasts",
            "none",
        ]
    args += ["--head", head, "--heatmap-loss", "100"] if head != "regression" else []
    args += ["--compile"] if compile else []
    result = speed.main(args + ["--json", str(out / f"speed-{head}.json")])
    rows = [
        f"{r['autocast']} {r['real_loop']:.0f} img/s (b)/(a) {r['ratio']:.2f}"
        for r in result["rows"]
    ]
    low = min(r["ratio"] for r in result["rows"])
    if gpu and low < TARGET_RATIO:
        raise AssertionError(f"(b)/(a) {low:.2f} below {TARGET_RATIO}: " + "; ".join(rows))
    return "; ".join(rows)


def check_chain(gpu: bool, out: Path) -> str:
    from lmkit.chain.pipeline import run_chain

    paper = str(ROOT / "params" / "paper.yaml")
    t0 = time.perf_counter()
    run = run_chain(paper, chain_overrides(gpu), str(out / "chain"), force=True)
    first = time.perf_counter() - t0
    more = chain_overrides(gpu) + ["train.resume=true", "train.epochs=3"]
    run = run_chain(paper, more, str(out / "chain"))
    history = pd.read_csv(run.history)
    if list(history["epoch"]) != [1, 2, 3] or not np.isfinite(history["train_mse"]).all():
        raise AssertionError(
            f"the resumed history is {history[['epoch', 'train_mse']].to_dict('list')}"
        )
    memory = (
        f", peak {history['max_memory_mib'].max() / 1024:.1f} GiB"
        if "max_memory_mib" in history
        else ""
    )
    return f"2 epochs in {first / 60:.1f} min, resumed to 3{memory}"


def _test_crops(out: Path):
    from lmkit.data.prepare import load_cache

    return load_cache(out / "chain" / "data" / "test").images[:32]


def check_cpu_vs_cuda(out: Path) -> str:
    from lmkit.study.model import load_model_file, predict

    crops = _test_crops(out)
    model, info = load_model_file(out / "chain" / "train" / "model.pt", "cpu")
    on_cpu = predict(model, crops, info.input_size, 32, "cpu")
    on_gpu = predict(
        model.to("cuda"), crops, info.input_size, 32, "cuda"
    )  # the card's own precision
    gap = float(np.abs(on_cpu - on_gpu).max())
    if gap > MAX_PX:
        raise AssertionError(f"CPU and CUDA predictions differ by {gap:.2f} px (at most {MAX_PX})")
    return f"largest gap {gap:.3f} px"


def check_onnx(out: Path) -> str:
    import onnxruntime

    from lmkit.study.model import load_model_file
    from lmkit.use.export import CropNet, export

    model, info = load_model_file(out / "chain" / "train" / "model.pt", "cpu")
    crops = torch.nn.functional.interpolate(
        torch.from_numpy(np.array(_test_crops(out))).permute(0, 3, 1, 2).float(),
        size=info.input_size,
        mode="area",
    )
    crops = crops.round().byte().permute(0, 2, 3, 1).contiguous()  # uint8 crops at the input size
    path = export(out / "chain", "onnx", out / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_points = session.run(None, {"crops": crops.numpy()})[0]
    with torch.no_grad():
        torch_points = CropNet(model, info)(crops).numpy()
    gap = float(np.abs(onnx_points - torch_points).max())
    if gap > MAX_PX:
        raise AssertionError(f"ONNX and PyTorch differ by {gap:.2f} px (at most {MAX_PX})")
    return f"{path.stat().st_size / 1e6:.0f} MB, largest gap {gap:.4f} px"


def check_collectives(gpu: bool) -> str:
    import torch.distributed as dist

    from lmkit.study.model import build_model
    from lmkit.train.loop import epoch_sums

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend, device = ("nccl", "cuda:0") if gpu else ("gloo", "cpu")
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = build_model(5, pretrained=False).to(device)
        sums = torch.tensor([1.0, 2.0, 0.0, 4.0], dtype=torch.float64, device=device)
        got = epoch_sums(
            sums, model, world=2
        ).tolist()  # world=2: the collective path, in a group of one
    finally:
        dist.destroy_process_group()
    if got != [1.0, 2.0, 0.0, 4.0]:
        raise AssertionError(f"all_reduce over one process changed the sums: {got}")
    return f"{backend}: all_reduce and {len(list(model.buffers()))} broadcasts on {device}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        default="reports/gpu-check",
        help="folder of its files (the chain's run folder in it)",
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    if gpu:
        cc = ".".join(map(str, torch.cuda.get_device_capability()))
        label = f"GPU: {torch.cuda.get_device_name()} (compute capability {cc})"
    else:
        label = f"NO GPU: a small CPU-sized check ({os.cpu_count()} cores); its figures say nothing about a GPU"
    print(f"lmkit GPU check. {label}; torch {torch.__version__}", flush=True)
    checks = [
        ("speed", lambda: check_speed(gpu, out)),
        ("compile", (lambda: check_speed(gpu, out, "heatmap", compile=True)) if gpu else None),
        ("chain", lambda: check_chain(gpu, out)),
        ("cpu-vs-cuda", (lambda: check_cpu_vs_cuda(out)) if gpu else None),
        ("onnx", lambda: check_onnx(out)),
        ("collectives", lambda: check_collectives(gpu)),
    ]
    rows = []
    for name, check in checks:
        t0 = time.perf_counter()
        if check is None:
            rows.append(
                {"check": name, "result": "skipped", "detail": "needs a GPU", "seconds": 0.0}
            )
            continue
        try:
            rows.append({"check": name, "result": "passed", "detail": check()})
        except Exception as e:  # noqa: BLE001 - every failure is a row of the table
            rows.append({"check": name, "result": "FAILED", "detail": f"{type(e).__name__}: {e}"})
        rows[-1]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\n--- GPU check --- {label}")
    for r in rows:
        print(f"  {r['check']:<12} {r['result']:<8} {r['seconds']:7.1f} s  {r['detail']}")
    failed = [r["check"] for r in rows if r["result"] == "FAILED"]
    summary = {
        "device": label,
        "gpu": gpu,
        "torch": torch.__version__,
        "rows": rows,
        "failed": failed,
    }
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    print(f"written {out / 'gpu_check.json'}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
