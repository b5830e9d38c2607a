"""A prepared run's data: 01_prepare's caches and split (``prepare_run``), read back as
training, validation and test faces (``load_data``), with the data set's label."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lmkit.data.prepare import (
    PreparedSet,
    Subset,
    load_cache,
    prepare as prepare_caches,
    split_train_val,
)
from lmkit.run.progress import emit
from lmkit.run.folder import RunFolder, read_json, write_json
from lmkit.study.metrics import mean_shape
from lmkit.study.schemes import Scheme, check_mirror, scheme_for_points
from lmkit.run.params import Params


def comparable_to_paper(d: "RunData") -> bool:
    """The study's numbers are comparable only on Helen's own 194-point data.

    Used in: 03_train, "Training"."""
    return d.train_set.manifest["source"] == "helen" and d.scheme.n_points == 194


def describe_dataset(manifest: dict, joint: dict | None = None) -> str:
    """The data set in words, from a prepared cache's manifest (its source, folder and extra folders).

    Used in: 01_prepare, "Prepare the data"; 01_prepare, "Which number is which point"."""
    src = manifest["source"]
    if src == "synthetic":
        return f"synthetic faces (lmkit built-in, seed {manifest['seed']})"
    name = {"helen": "Helen (official layout)", "300w": "300-W layout"}[src]
    extra = (
        f" + {', '.join(Path(f).name for f in manifest['extra_train'])} (training)"
        if manifest.get("extra_train")
        else ""
    )
    beside = (
        f" + {', '.join(Path(f).name for f in joint['joint_train'])} ({joint['n_points']} points, joint)"
        if joint
        else ""
    )
    return f"{name}: {Path(manifest['root']).name}{extra}{beside}"


def prepare_run(run: RunFolder, params: Params, log=print) -> dict[str, PreparedSet]:
    """The run's train and test caches (made, or reused when their data and crop are unchanged)
    and its train/validation split (``split.json``), refused when too few faces are left to train on.

    Used in: 01_prepare, "Prepare the data"."""
    splits = prepare_caches(params.data, params.seed, run.cache_dir(params.data.cache_dir), log)
    split = split_train_val(
        len(splits["train"]), params.data.val_fraction, params.seed, params.data.split
    )
    batch = params.train.batch_size
    if len(split["train"]) < batch:
        raise ValueError(
            f"too little data: {len(split['train'])} training faces after holding out {len(split['val'])} "
            f"for validation (data.val_fraction {params.data.val_fraction}), fewer than one batch "
            f"(train.batch_size {batch}); add faces or lower train.batch_size"
        )
    write_json(split, run.split)
    overlap = set(split["train"]) & set(split["val"])
    emit(
        log,
        "split",
        f"split ({split['protocol']}): {len(split['train'])} training and {len(split['val'])} validation images, "
        f"{len(overlap)} shared, {len(splits['test'])} test images",
    )
    return splits


class Faces(NamedTuple):
    images: Subset
    landmarks: Subset


@dataclass(frozen=True)
class RunData:
    """A prepared run's faces: ``train`` and ``val`` (images, landmarks) from the training
    split, the ``test`` split, the whole training split, its landmark scheme and a label; with
    ``data.joint_train`` the ``joint`` faces of another scheme (``joint_scheme``), trained on only."""

    train: Faces
    val: Faces
    test: PreparedSet
    train_set: PreparedSet
    scheme: Scheme
    dataset: str
    joint: Faces | None = None
    joint_scheme: Scheme | None = None

    def training(self) -> "TrainingSet":
        """What the network trains on. Without joint faces: the training faces, the scheme's
        mirror map and their mean shape. With them: the two sets one after the other, each face
        with the points of both schemes (the data set's first, then the joint scheme's; NaN where
        a face has no such point, which its loss leaves out: ``lmkit.study.losses.per_scheme``),
        the two maps side by side, and each point's mean over the faces that have it."""
        if self.joint is None:
            return TrainingSet(
                self.train.images,
                self.train.landmarks,
                self.scheme.mirror,
                mean_shape(self.train.landmarks),
            )
        k, j = self.scheme.n_points, self.joint_scheme.n_points
        n, m = len(self.train.images), len(self.joint.images)
        landmarks = np.full((n + m, k + j, 2), np.nan, dtype=np.float32)
        landmarks[:n, :k] = np.asarray(self.train.landmarks)
        landmarks[n:, k:] = np.asarray(self.joint.landmarks)
        images = np.concatenate([np.asarray(self.train.images), np.asarray(self.joint.images)])
        return TrainingSet(
            images,
            landmarks,
            self.scheme.mirror + tuple(k + i for i in self.joint_scheme.mirror),
            np.nanmean(landmarks.astype(np.float64), axis=0).astype(np.float32),
        )


class TrainingSet(NamedTuple):
    """``RunData.training()``: images (N, S, S, 3), landmarks (N, K, 2), the mirror map, the mean shape (K, 2)."""

    images: np.ndarray | Subset
    landmarks: np.ndarray | Subset
    mirror: tuple[int, ...]
    mean: np.ndarray


def load_data(run: RunFolder, params: Params) -> RunData:
    """Train / validation / test arrays of a prepared run; with ``data.final`` the training faces
    are the training and validation faces together (the validation faces still listed as such).

    Used in: 02_hpsearch, "Search the learning rate and weight decay"; 03_train, "Train"; 04_evaluate,
    "Evaluate on the test split"."""
    cache = run.cache_dir(params.data.cache_dir)
    train, test = load_cache(cache / "train"), load_cache(cache / "test")
    split = read_json(run.split, "01_prepare")
    ti, vi = np.asarray(split["train"]), np.asarray(split["val"])
    if params.data.final:  # the final model: every training photo trains; val is then not held out
        ti = np.union1d(ti, vi)
    scheme, joint, joint_scheme = scheme_for_points(train.landmarks.shape[1]), None, None
    if params.data.joint_train:
        joint_set = load_cache(cache / "joint")
        joint, joint_scheme = (
            Faces(joint_set.images, joint_set.landmarks),
            scheme_for_points(joint_set.landmarks.shape[1]),
        )
        if joint_scheme == scheme:
            raise ValueError(
                f"data.joint_train: its faces have the data set's own {scheme.name} points; add them "
                "with data.extra_train instead"
            )
    return RunData(
        Faces(Subset(train.images, ti), Subset(train.landmarks, ti)),
        Faces(Subset(train.images, vi), Subset(train.landmarks, vi)),
        test,
        train,
        scheme,
        describe_dataset(train.manifest, joint_set.manifest if joint else None),
        joint,
        joint_scheme,
    )


def check_flips(params: Params, scheme: Scheme, mean: np.ndarray, flip_test: bool = False) -> None:
    """Before the mirror map is used (training flips, the flip test), check it on the data.

    Used in: 02_hpsearch, "The objective"."""
    if params.train.flip > 0 or flip_test:
        check_mirror(scheme, mean, params.data.crop_size)
