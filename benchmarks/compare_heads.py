"""Regression head against heatmap head, on the validation split only (the test photos are not
looked at), at the same budget, over several seeds:

    python -m benchmarks.compare_heads params/helen68-best-cpu.yaml --epochs 12 --seeds 0 1 [--json FILE]

Each (head, seed) trains the params' recipe for ``--epochs`` epochs with one fixed learning rate
and weight decay (``--lr``, ``--weight-decay``; no search, so both heads get the same), keeps the
best validation epoch, and is scored on the validation faces as evaluation would score the test
faces (the params' view and flip test, NME in photo pixels over the outer eye corners and the eye
centres). Prints one row per run, the mean per head and the wall-clock seconds of training.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lmkit.report import evaluation
from lmkit.study import metrics
from lmkit.run import params as P
from lmkit.study import cells
from lmkit.data.faces import load_data, prepare_run
from lmkit.study.modelinfo import view_fraction
from lmkit.study.model import pick_device, predict
from lmkit.study.modelinfo import REFERENCE_SIZE
from lmkit.data.prepare import load_sources
from lmkit.run.folder import RunFolder
from lmkit.train.config import TrainConfig, model_options, new_model
from lmkit.train.loop import fit
from lmkit.train.checkpoints import load_checkpoint

STUDY = cells.study("03_train")  # the notebook's network, loss and step, as saved


def validation_scores(model, d, params, boxes) -> dict:
    """NMEs (photo pixels) and MSE (256 frame) of ``model`` on the run's validation faces, scored
    as evaluation scores the test faces (``lmkit.report.evaluation.score``)."""
    t = params.train
    view = view_fraction(params.model.view, t.crop_fraction, t.scale)
    images, true = d.val.images, np.asarray(d.val.landmarks, dtype=np.float64)
    pred = predict(
        model,
        images,
        params.model.input_size,
        t.batch_size,
        "cpu",
        flip_mirror=d.scheme.mirror if params.eval.flip_test else None,
        view=view,
    )
    _, rows = evaluation.score({"model": pred}, true, boxes, images.shape[1], d.scheme)
    row = rows["model"]
    row["mean_error_px"] = (
        ((pred - true) * REFERENCE_SIZE / images.shape[1]).mean((0, 1)).round(3).tolist()
    )  # the constant shift
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("params")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--heads", nargs="+", default=["regression", "heatmap"])
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--cache", help="a prepared cache folder to share between invocations (data.cache_dir)"
    )
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    base = P.load(
        args.params, args.overrides + ([f"data.cache_dir={args.cache}"] if args.cache else [])
    )
    with tempfile.TemporaryDirectory(
        prefix="lmkit-heads-"
    ) as tmp:  # the sub-runs' checkpoints: about 1 GB
        rows = compare(args, base, Path(tmp))
    for head in args.heads:
        mine = [r for r in rows if r["head"] == head]
        key = "nme_oc_mean" if "nme_oc_mean" in mine[0] else "nme_io_mean"
        values = [r[key] for r in mine]
        print(
            f"{head:10s} mean over {len(mine)} seeds: val {key} {np.mean(values):.4f} "
            f"({min(values):.4f}-{max(values):.4f}), training {np.mean([r['train_seconds'] for r in mine]):.0f} s"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def compare(args, base: dict, work: Path) -> list[dict]:
    """Train and score every (head, seed) in ``work`` (a folder removed afterwards); one row each."""
    run = RunFolder(work / "run")
    prepare_run(run, base, log=lambda _: None)
    d = load_data(run, base)
    _, all_boxes = load_sources(run.cache_dir(base.data.cache_dir) / "train")
    boxes = all_boxes[d.val.images.indices]
    rows = []
    for head in args.heads:
        for seed in args.seeds:
            params = P.merge(
                base,
                {
                    "model.head": head,
                    "seed": seed,
                    "train.epochs": args.epochs,
                    **({"model.head_init": "default"} if head != "regression" else {}),
                },
            )
            mean = metrics.mean_shape(d.train.landmarks)
            model = new_model(
                STUDY.build_network, d.scheme.n_points, mean, seed, "cpu", **model_options(params)
            )
            cfg = TrainConfig.from_params(
                params,
                pick_device("cpu"),
                d.scheme.mirror,
                lr=args.lr,
                weight_decay=args.weight_decay,
            )
            out = work / f"{head}-{seed}"
            t0 = time.perf_counter()
            hist = fit(
                model, *d.train, *d.val, cfg, out_dir=out, step=STUDY.train_step, log=lambda _: None
            )
            seconds = time.perf_counter() - t0
            model.load_state_dict(load_checkpoint(out / "best.pt")["model"])
            row = {
                "head": head,
                "seed": seed,
                "epochs": args.epochs,
                "train_seconds": round(seconds, 1),
                "best_val_mse": float(hist["val_mse"].min()),
                **validation_scores(model, d, params, boxes),
            }
            rows.append(row)
            print(
                f"{head:10s} seed {seed}: val NME oc {row.get('nme_oc_mean', float('nan')):.4f}, io {row['nme_io_mean']:.4f}, "
                f"best val MSE {row['best_val_mse']:.1f} px², mean error (x, y) {row['mean_error_px']} px, "
                f"{seconds:.0f} s",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
