"""The one-command GPU check: does lmkit's GPU path run, and how fast?

    python -m benchmarks.gpu_check [--out reports/gpu-check] [--fraction 1.0]

1. prints the device;
2. runs the speed benchmark there (benchmarks.speed at 256x256, batch 64) for the (b)/(a) ratio;
3. runs the whole notebook chain (lmkit run) on a paper-sized synthetic data set: 194-point
   faces at 256x256, 2,500 faces of which 2,000 train (x4 augmented: 8,000 samples per epoch),
   330 test; the study's search (10 trials of 10 epochs) and 100 epochs; ``--fraction``
   scales the epochs and trials down;
4. reports minutes per notebook, the peak GPU memory of training and the targets (the whole
   chain under 5 minutes on one H100/H200, (b)/(a) at least 0.9).

Exits non-zero when anything fails. Without a GPU it runs a small CPU-sized version
(64x64, a few faces and epochs), clearly labelled: it checks the path, not the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

TARGET_MINUTES, TARGET_RATIO = 5.0, 0.9


def chain_overrides(gpu: bool, fraction: float) -> list[str]:
    if gpu:
        epochs, trials, trial_epochs = (
            max(1, round(100 * fraction)),
            max(1, round(10 * fraction)),
            10,
        )
        sizes = [
            "data.synthetic_train=2500",
            "data.synthetic_test=330",
            "model.input_size=256",
            "train.batch_size=64",
            "train.epoch_multiplier=4",
        ]
    else:  # a CPU-sized check of the same path
        epochs, trials, trial_epochs = 2, 2, 1
        sizes = [
            "data.synthetic_train=80",
            "data.synthetic_test=16",
            "model.input_size=64",
            "train.batch_size=16",
            "train.epoch_multiplier=1",
        ]
    return [
        "data.source=synthetic",
        "data.root=null",
        "model.pretrained=false",
        f"train.epochs={epochs}",
        f"search.trials={trials}",
        f"search.epochs_per_trial={trial_epochs}",
        "eval.detector_box=false",
        *sizes,
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="reports/gpu-check", help="run folder of the chain")
    ap.add_argument(
        "--fraction", type=float, default=1.0, help="scale the paper-sized epochs and trials (GPU)"
    )
    ap.add_argument("--skip-speed", action="store_true", help="only the chain")
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available()
    label = (
        f"GPU: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
        if gpu
        else f"NO GPU: a small CPU-sized check ({os.cpu_count()} cores); its figures say nothing "
        "about a GPU"
    )
    print(f"lmkit GPU check. {label}; torch {torch.__version__}", flush=True)
    summary: dict = {"device": label, "gpu": gpu, "torch": torch.__version__}
    failed = []
    if not args.skip_speed:
        from benchmarks import speed

        speed_args = (
            ["--sizes", "256", "--batches", "64"]
            if gpu
            else ["--sizes", "64", "--batches", "16", "--steps", "2", "--rounds", "1"]
        )
        try:
            result = speed.main(speed_args + ["--json", str(Path(args.out) / "benchmark.json")])
            summary["ratio_b_over_a"] = min(r["ratio"] for r in result["rows"])
        except Exception as e:  # noqa: BLE001 - report and go on to the chain
            failed.append(f"speed benchmark: {type(e).__name__}: {e}")
    from lmkit.chain.pipeline import run_chain

    t0 = time.perf_counter()
    try:
        paper = Path(__file__).resolve().parents[1] / "params" / "paper.yaml"
        run = run_chain(str(paper), chain_overrides(gpu, args.fraction), args.out, force=True)
        info = json.loads(run.path("run.json").read_text())
        summary["minutes"] = {k: round(v / 60, 2) for k, v in info["timings_s"].items()}
        history = pd.read_csv(run.history)
        if "max_memory_mib" in history:
            summary["peak_gpu_memory_gib"] = round(float(history["max_memory_mib"].max()) / 1024, 2)
        summary["test_mse_px2"] = json.loads(run.metrics.read_text())["methods"][
            "ResNet18 (this run)"
        ]["mse_mean"]
    except Exception as e:  # noqa: BLE001 - the check reports every failure
        failed.append(f"chain: {type(e).__name__}: {e}")
    summary["chain_minutes"] = round((time.perf_counter() - t0) / 60, 2)
    print("\n--- GPU check ---")
    print(label)
    for stage, minutes in summary.get("minutes", {}).items():
        print(f"  {stage:<12} {minutes:6.2f} min")
    print(
        f"  whole chain  {summary['chain_minutes']:6.2f} min (with kernel start-up and HTML export)"
    )
    if "peak_gpu_memory_gib" in summary:
        print(f"  peak GPU memory in training: {summary['peak_gpu_memory_gib']:.2f} GiB")
    if "ratio_b_over_a" in summary:
        print(f"  (b)/(a) at {'256x256' if gpu else '64x64'}: {summary['ratio_b_over_a']:.3f}")
    if gpu and args.fraction == 1.0:
        print(
            f"  targets: chain under {TARGET_MINUTES:.0f} min: "
            f"{'met' if summary['chain_minutes'] < TARGET_MINUTES else 'MISSED'}; (b)/(a) at least {TARGET_RATIO}: "
            f"{'met' if summary.get('ratio_b_over_a', 0) >= TARGET_RATIO else 'MISSED'}"
        )
    elif not gpu:
        print("  (CPU-sized check: the path ran; the targets are for a GPU)")
    for f in failed:
        print(f"FAILED: {f}", file=sys.stderr)
    out = Path(args.out) / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**summary, "failed": failed}, indent=2))
    print(f"written {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
