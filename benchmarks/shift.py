"""Where a model's constant shift comes from: its mean error (prediction minus annotation, px of
the 256 frame) on its own training faces, as training showed them and mirrored, beside the
validation faces as evaluation sees them (without the bias correction):

    python -m benchmarks.shift RUN [--faces 320]
    python -m benchmarks.shift --checkpoint DIR/best.pt --params FILE [-p KEY=VALUE ...] --run RUN

A fitted model has no mean error on its training faces; a mean error there is the recipe's (the
loss, the schedule), and one on the mirrored faces only is what the flip test averages in
(README, "The constant shift, explained"). The second form reads a checkpoint that has no model
file (benchmarks.compare_heads keeps them) with the params it was trained with and a run folder's split.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from lmkit.run import params as P
from lmkit.data.faces import load_data
from lmkit.study.modelinfo import view_fraction
from lmkit.study.model import build_model, load_model_file, predict
from lmkit.study.modelinfo import REFERENCE_SIZE
from lmkit.run.folder import RunFolder
from lmkit.train.config import TrainConfig
from lmkit.train.checkpoints import load_checkpoint


def training_residuals(model, images, landmarks, cfg: TrainConfig, flip: float) -> np.ndarray:
    """Mean (x, y) error, px of the 256 frame, on ``images`` through the training augmentation,
    every face mirrored (``flip`` 1) or none (0)."""
    aug = dataclasses.replace(cfg.augment, flip=flip)
    pred, target = predict(
        model, images, cfg.input_size, 32, "cpu", augment=aug, landmarks=landmarks
    )
    return ((pred - target) * (REFERENCE_SIZE / images.shape[1])).mean((0, 1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--checkpoint")
    ap.add_argument("--params")
    ap.add_argument("-p", dest="overrides", action="append", default=[])
    ap.add_argument(
        "--run",
        dest="split_run",
        help="with --checkpoint: the run folder whose split and cache to use",
    )
    ap.add_argument("--faces", type=int, default=320, help="training faces to measure")
    args = ap.parse_args(argv)
    if args.checkpoint:
        run, params = RunFolder(args.split_run), P.load(args.params, args.overrides)
    else:
        run = RunFolder(args.run)
        params = P.load(run.params, args.overrides)
    d = load_data(run, params)
    if args.checkpoint:
        model = build_model(d.scheme.n_points, False, head=params.model.head)
        model.load_state_dict(load_checkpoint(args.checkpoint)["model"])
        t = params.train
        view = view_fraction(params.model.view, t.crop_fraction, t.scale)
        flip_test = params.eval.flip_test
    else:
        model, info = load_model_file(run.model_file, "cpu")
        view, flip_test = info.view, info.flip_test
    cfg = TrainConfig.from_params(params, "cpu", d.scheme.mirror)
    n = min(args.faces, len(d.train.images))
    images, landmarks = d.train.images[:n], np.asarray(d.train.landmarks[:n])
    for flip, what in ((0.0, "as trained"), (1.0, "mirrored")):
        x, y = training_residuals(model, images, landmarks, cfg, flip)
        print(f"{n} training faces, {what}: mean error {x:+.2f}, {y:+.2f} px (x, y; 256 frame)")
    pred = predict(
        model,
        d.val.images,
        cfg.input_size,
        32,
        "cpu",
        flip_mirror=d.scheme.mirror if flip_test else None,
        view=view,
    )
    err = (pred - np.asarray(d.val.landmarks, np.float64)) * (
        REFERENCE_SIZE / d.val.images.shape[1]
    )
    print(
        f"{len(err)} validation faces (flip test {'on' if flip_test else 'off'}, no bias correction): mean error "
        f"{err[..., 0].mean():+.2f}, {err[..., 1].mean():+.2f} px"
    )


if __name__ == "__main__":
    main()
