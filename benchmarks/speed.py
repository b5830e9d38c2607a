"""Speed benchmark: is the data path ever the bottleneck?

    python -m benchmarks.speed [--sizes 256 128] [--batches 32 64] [--autocasts none bfloat16] [--json FILE]
    python -m benchmarks.speed --sizes 96 --batches 32 --head heatmap --heatmap-loss 100 [--compile]

On the current device (CUDA when present), for every input size and batch size:
  (a) model-only training step, images/s, on random tensors already on the device;
  (b) the real training loop, images/s: cache (memory map), gather, augmentation,
      normalization, loss, optimizer, exactly as lmkit.train.loop.fit runs it;
  (a) and (b) use the same model and alternate over rounds; medians are reported;
  (c) inference images/s, as evaluation runs it;
and once: (d) preparation images/s (decode, crop, resize, cache) on real photos from
../shared/data (or $LMKIT_DATA) when present, else on synthetic faces; (e) peak resident
memory of the process after training. Prints a table with the ratio (b)/(a), writes JSON.
Prediction on photos, beside dlib: ``python -m benchmarks.predict``.

``--head``, ``--heatmap-loss`` and ``--compile`` measure (a) and (b) for another head, with the DSNT
regulariser, or with ``torch.compile`` (compiled in the untimed warm-up steps).
``--autocasts`` measures (a) and (b) under each mixed precision (train.autocast; the CPU's
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

from lmkit.study.augment import Augment
from lmkit.train.devices import DevicePlan, cuda_switches, place_training_set
from lmkit.study.model import build_model, pick_device, predict
from lmkit.data.prepare import load_cache, write_cache
from lmkit.data.readers import read_300w_folder
from lmkit.data.synthetic import synthetic_faces
from lmkit.study import cells
from lmkit.study.modelinfo import REFERENCE_SIZE
from lmkit.train.batches import Batches, epoch_order
from lmkit.train.devices import ScaledOptimizer, TrainingNetwork, training_network
from lmkit.train.config import TrainConfig


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


def training_rates(cache, size: int, batch: int, steps: int, rounds: int, device, plan=None, head: str = "regression",
                   heatmap_loss: float = 0.0, compile: bool = False) -> tuple[float, float, float, tuple]:
    """(a) model-only and (b) real-loop images/s on the same model and optimizer, measured in
    alternating rounds (medians), so that drift of the machine hits both alike; and (b)/(a): the
    median of each round's ratio, with the lowest and highest (how far the machine's noise reaches). ``head``,
    ``heatmap_loss`` and ``compile`` as model.head, train.heatmap_loss and model.compile; a
    compiled model is compiled during the warm-up steps, which are not timed."""
    model = build_model(cache.landmarks.shape[1], pretrained=False, head=head).to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    cfg = TrainConfig(batch_size=batch, input_size=size, augment=Augment(), epoch_multiplier=64, device=str(device),
                      heatmap_loss=heatmap_loss, compile=compile)
    plan = cfg.plan() if plan is None else plan
    net, _ = training_network(model, cfg, plan)  # layout and torch.compile as fit() applies them
    x = plan.layout(torch.randn(batch, 3, size, size, device=device))
    y = torch.rand(batch, cache.landmarks.shape[1], 2, device=device) * size
    # the real loop, placed as fit() places it (lmkit.train.devices)
    cuda_switches(device)
    images, landmarks = place_training_set(cache.images, cache.landmarks, size, plan)
    order, g = epoch_order(len(cache), cfg, 1)
    batches = iter(Batches(images, landmarks, order, cfg, g, device, prefetch=plan.prefetch,
                           src_size=cache.images.shape[1]))
    scaler = plan.grad_scaler()
    step = cells.study("03_train").train_step  # the notebook's training step, as fit() calls it
    net = TrainingNetwork(net, plan, scaler)
    opt = ScaledOptimizer(opt, scaler, device) if scaler is not None else opt
    to_reference = REFERENCE_SIZE / size

    def real_step():
        images, points = next(batches)
        step(net, opt, images, points * to_reference, cfg)

    def model_step():
        step(net, opt, x, y * to_reference, cfg)

    for _ in range(2):  # warm-up: allocator, cuDNN autotuning
        model_step()
        real_step()
    a, b = [], []
    for _ in range(rounds):
        a.append(_timed(model_step, steps, batch, device))
        b.append(_timed(real_step, steps, batch, device))
    ratios = np.asarray(b) / np.asarray(a)  # each round's pair, measured back to back
    return float(np.median(a)), float(np.median(b)), float(np.median(ratios)), (float(ratios.min()), float(ratios.max()))


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
    root = Path(os.environ.get("LMKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
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
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds of (a) and (b); medians are reported "
                    "(a 2-core host varied by +-10%% from round to round)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--autocasts", nargs="+", default=["auto"], help="train.autocast values to measure")
    ap.add_argument("--head", default="regression", help="model.head of the trained network")
    ap.add_argument("--heatmap-loss", type=float, default=0.0, help="train.heatmap_loss (heatmap heads)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (model.compile)")
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
                    a, b, ratio, spread = training_rates(cache, size, batch, args.steps, args.rounds, device, plan,
                                                         args.head, args.heatmap_loss, args.compile)
                    c = inference(cache, size, batch, device)
                    rows.append({"size": size, "batch": batch, "autocast": plan.autocast, "model_only": a,
                                 "real_loop": b, "ratio": ratio, "ratio_range": spread, "inference": c})
                    print(f"  {size}x{size} batch {batch} autocast {plan.autocast} head {args.head}"
                          f"{' compiled' if args.compile else ''}: model-only {a:.1f}, real loop "
                          f"{b:.1f} img/s (ratio {ratio:.3f}, rounds {spread[0]:.3f}-{spread[1]:.3f}), "
                          f"inference {c:.1f} img/s", flush=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    result = {"device": device_name, "machine": platform.platform(), "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "threads": torch.get_num_threads(), "steps": args.steps, "rounds": args.rounds, "head": args.head,
              "heatmap_loss": args.heatmap_loss, "compile": args.compile, "rows": rows,
              "preparation_images_per_s": prep_rate, "preparation_data": prep_what, "peak_rss_mib": peak_mib}
    print(f"\ndevice: {device_name} ({torch.backends.cpu.get_cpu_capability()}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'input':>9} {'batch':>5} {'autocast':>8} {'(a) model-only':>15} {'(b) real loop':>14} {'(b)/(a)':>8} "
          f"{'rounds':>12} {'(c) inference':>14}")
    for r in rows:
        print(f"{r['size']:>4}x{r['size']:<4} {r['batch']:>5} {r['autocast']:>8} {r['model_only']:>11.1f} img/s {r['real_loop']:>10.1f} img/s"
              f" {r['ratio']:>8.3f} {r['ratio_range'][0]:>5.3f}-{r['ratio_range'][1]:.3f} {r['inference']:>10.1f} img/s")
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
