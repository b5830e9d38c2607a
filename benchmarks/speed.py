"""Speed benchmark: is the data path ever the bottleneck?

    python -m benchmarks.speed [--sizes 256 128] [--batches 32 64] [--autocasts none bfloat16] [--json FILE]
    python -m benchmarks.speed --sizes 96 --batches 32 --head heatmap --heatmap-loss 100 [--compile]

On the current device (CUDA when present), for every input size and batch size:
  (a) model-only training step, images/s, on random tensors already on the device;
  (b) the real training loop, images/s: lmkit.train.loop.fit itself for one epoch (cache,
      gather, augmentation, normalization, the step, its once-an-epoch read of the sums);
  (a) and (b) use the same model and alternate over rounds; medians are reported;
  (c) inference images/s, as evaluation runs it;
and once: (d) preparation images/s (decode, crop, resize, cache) on real photos from
../shared/data (or $LMKIT_DATA) when present, else on synthetic faces; (e) peak resident
memory of the process after training. Prints a table with the ratio (b)/(a), writes JSON.
Prediction on photos, beside dlib: ``python -m benchmarks.predict``.

``--head``, ``--heatmap-loss`` and ``--compile`` measure (a) and (b) for another head, with the DSNT
regulariser, or with ``torch.compile`` (compiled in the untimed warm-up steps).
``--autocasts`` measures (a) and (b) under each mixed precision (system.autocast; the CPU's
instruction set, which decides whether bfloat16 pays, is printed and recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lmkit.data.prepare import load_cache, write_cache
from lmkit.data.readers import read_300w_folder
from lmkit.data.synthetic import synthetic_faces
from lmkit.run import params as P
from lmkit.run.progress import quiet
from lmkit.study import cells
from lmkit.study.model import build_model, pick_device, predict
from lmkit.study.modelinfo import REFERENCE_SIZE
from lmkit.train.config import DevicePlan, TrainConfig, cuda_switches, new_model
from lmkit.train.loop import fit


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(step, steps: int, batch: int, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def training_rates(
    cache,
    size: int,
    batch: int,
    steps: int,
    rounds: int,
    device,
    plan=None,
    head: str = "regression",
    heatmap_loss: float = 0.0,
    compile: bool = False,
) -> tuple[float, float, float, tuple]:
    """(a) model-only images/s: 03's training step on random tensors already on the device; (b) the
    real loop: ``lmkit.train.loop.fit`` itself, one epoch of ``steps`` batches (its own images/s, which
    count its batches, augmentation, syncs and the validation of two faces). Measured in alternating
    rounds (medians), so that drift of the machine hits both alike; and (b)/(a): the median of each
    round's ratio, with the lowest and highest. ``head``, ``heatmap_loss`` and ``compile`` as
    model.head, train.heatmap_loss and system.compile; a compiled model is compiled in the warm-up."""
    params = P.load(None, {"model.head": head, "train.heatmap_loss": heatmap_loss})
    study = cells.study(
        "03_train", params=params
    )  # the notebook's network and step, as fit() runs them
    plan = DevicePlan.choose(device) if plan is None else plan
    k = cache.landmarks.shape[1]
    cfg = TrainConfig(
        batch_size=batch,
        input_size=size,
        epochs=1,
        device=str(device),
        heatmap_loss=heatmap_loss,
        compile=compile,
        resident=plan.resident,
        prefetch=plan.prefetch,
        autocast=plan.autocast,
        channels_last=plan.channels_last,
        epoch_multiplier=-(-steps * batch // len(cache)),
    )
    train = (cache.images, cache.landmarks)
    val = (cache.images[:2], cache.landmarks[:2])
    model = new_model(study.build_network, k, None, 0, device, pretrained=False).train()
    if not plan.channels_last:
        model.to(memory_format=torch.contiguous_format)
    net = torch.compile(model) if compile else model
    opt, scaler = torch.optim.Adam(model.parameters(), 1e-4), plan.grad_scaler()
    x = torch.randn(batch, 3, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last) if plan.channels_last else x
    y = torch.rand(batch, k, 2, device=device) * REFERENCE_SIZE
    cuda_switches(device)

    def model_steps():
        for _ in range(steps):
            study.train_step(net, opt, scaler, x, y, cfg)

    def real_loop() -> float:
        return float(
            fit(model, study.train_step, train, val, cfg, log=quiet)["images_per_s"].iloc[0]
        )

    model_steps()  # warm-up: allocator, cuDNN autotuning, compilation
    real_loop()
    a, b = [], []
    for _ in range(rounds):
        a.append(_timed(model_steps, 1, steps * batch, device))
        b.append(real_loop())
    ratios = np.asarray(b) / np.asarray(a)  # each round's pair, measured back to back
    return (
        float(np.median(a)),
        float(np.median(b)),
        float(np.median(ratios)),
        (float(ratios.min()), float(ratios.max())),
    )


def inference(cache, size: int, batch: int, device) -> float:
    model = build_model(cache.landmarks.shape[1], pretrained=False).to(device)
    n = min(len(cache), 8 * batch)
    predict(model, cache.images[:batch], size, batch, device)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    predict(model, cache.images[:n], size, batch, device)
    sync(device)
    return n / (time.perf_counter() - t0)


def data_folder() -> Path | None:
    root = Path(
        os.environ.get("LMKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    return root / "helen68" / "trainset" if (root / "helen68" / "trainset").is_dir() else None


def preparation(tmp: Path, n: int = 200) -> tuple[float, str, object]:
    folder = data_folder()
    if folder is not None:
        samples, what = read_300w_folder(folder), f"real photos ({folder})"
    else:
        samples, what = synthetic_faces(n, "train"), "synthetic faces (drawing included)"
    limited = (s for _, s in zip(range(n), samples))
    t0 = time.perf_counter()
    write_cache(limited, tmp / "cache", {"source": "benchmark"})
    return n / (time.perf_counter() - t0), what, load_cache(tmp / "cache")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 128])
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round and measurement")
    ap.add_argument(
        "--rounds",
        type=int,
        default=7,
        help="alternating rounds of (a) and (b); medians are reported "
        "(a 2-core host varied by +-10%% from round to round)",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--autocasts", nargs="+", default=["auto"], help="system.autocast values to measure"
    )
    ap.add_argument("--head", default="regression", help="model.head of the trained network")
    ap.add_argument(
        "--heatmap-loss", type=float, default=0.0, help="train.heatmap_loss (heatmap heads)"
    )
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile the model (system.compile)"
    )
    ap.add_argument("--json", default="reports/benchmark.json")
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        prep_rate, prep_what, cache = preparation(Path(tmp))
        rows = []
        for size in args.sizes:
            for batch in args.batches:
                for autocast in args.autocasts:
                    plan = DevicePlan.choose(device, autocast=autocast)
                    a, b, ratio, spread = training_rates(
                        cache,
                        size,
                        batch,
                        args.steps,
                        args.rounds,
                        device,
                        plan,
                        args.head,
                        args.heatmap_loss,
                        args.compile,
                    )
                    c = inference(cache, size, batch, device)
                    rows.append(
                        {
                            "size": size,
                            "batch": batch,
                            "autocast": plan.autocast,
                            "model_only": a,
                            "real_loop": b,
                            "ratio": ratio,
                            "ratio_range": spread,
                            "inference": c,
                        }
                    )
                    print(
                        f"  {size}x{size} batch {batch} autocast {plan.autocast} head {args.head}"
                        f"{' compiled' if args.compile else ''}: model-only {a:.1f}, real loop "
                        f"{b:.1f} img/s (ratio {ratio:.3f}, rounds {spread[0]:.3f}-{spread[1]:.3f}), "
                        f"inference {c:.1f} img/s",
                        flush=True,
                    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    device_name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    )
    result = {
        "device": device_name,
        "machine": platform.platform(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "rounds": args.rounds,
        "head": args.head,
        "heatmap_loss": args.heatmap_loss,
        "compile": args.compile,
        "rows": rows,
        "preparation_images_per_s": prep_rate,
        "preparation_data": prep_what,
        "peak_rss_mib": peak_mib,
    }
    print(
        f"\ndevice: {device_name} ({torch.backends.cpu.get_cpu_capability()}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'input':>9} {'batch':>5} {'autocast':>8} {'(a) model-only':>15} {'(b) real loop':>14} {'(b)/(a)':>8} "
        f"{'rounds':>12} {'(c) inference':>14}"
    )
    for r in rows:
        print(
            f"{r['size']:>4}x{r['size']:<4} {r['batch']:>5} {r['autocast']:>8} {r['model_only']:>11.1f} img/s {r['real_loop']:>10.1f} img/s"
            f" {r['ratio']:>8.3f} {r['ratio_range'][0]:>5.3f}-{r['ratio_range'][1]:.3f} {r['inference']:>10.1f} img/s"
        )
    print(f"(d) preparation: {prep_rate:.1f} images/s on {prep_what}")
    print(f"(e) peak resident memory: {peak_mib:.0f} MiB")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    tmp_out.replace(out)
    print(f"written {out}")
    return result


if __name__ == "__main__":
    main()
