"""A prepared run's data: 01_prepare's caches and split (``prepare_run``), read back as
training, validation and test faces (``load_data``), with the data set's label."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lmkit.data.prepare import PreparedSet, Subset, load_cache, prepare as prepare_caches, split_train_val
from lmkit.run.progress import emit
from lmkit.run.folder import RunFolder, read_json, write_json
from lmkit.study.schemes import Scheme, check_mirror, scheme_for_points
from lmkit.run.params import Params


def comparable_to_paper(d: "RunData") -> bool:
    """The study's numbers are comparable only on Helen's own 194-point data.

    Used in: 03_train, "Training"."""
    return d.train_set.manifest["source"] == "helen" and d.scheme.n_points == 194


def describe_dataset(manifest: dict) -> str:
    """The data set in words, from a prepared cache's manifest (its source, folder and extra folders).

    Used in: 01_prepare, "Prepare the data"; 01_prepare, "Which number is which point"."""
    src = manifest["source"]
    if src == "synthetic":
        return f"synthetic faces (lmkit built-in, seed {manifest['seed']})"
    name = {"helen": "Helen (official layout)", "300w": "300-W layout"}[src]
    extra = f" + {', '.join(Path(f).name for f in manifest['extra_train'])} (training)" if manifest.get("extra_train") else ""
    return f"{name}: {Path(manifest['root']).name}{extra}"


def prepare_run(run: RunFolder, params: Params, log=print) -> dict[str, PreparedSet]:
    """The run's train and test caches (made, or reused when their data and crop are unchanged)
    and its train/validation split (``split.json``), refused when too few faces are left to train on.

    Used in: 01_prepare, "Prepare the data"."""
    splits = prepare_caches(params.data, params.seed, run.cache_dir(params.data.cache_dir), log)
    split = split_train_val(len(splits["train"]), params.data.val_fraction, params.seed,
                            params.data.split)
    batch = params.train.batch_size
    if len(split["train"]) < batch:
        raise ValueError(f"too little data: {len(split['train'])} training faces after holding out {len(split['val'])} "
                         f"for validation (data.val_fraction {params.data.val_fraction}), fewer than one batch "
                         f"(train.batch_size {batch}); add faces or lower train.batch_size")
    write_json(split, run.split)
    overlap = set(split["train"]) & set(split["val"])
    emit(log, "split", f"split ({split['protocol']}): {len(split['train'])} training and {len(split['val'])} validation images, "
        f"{len(overlap)} shared, {len(splits['test'])} test images")
    return splits


class Faces(NamedTuple):
    images: Subset
    landmarks: Subset


@dataclass(frozen=True)
class RunData:
    """A prepared run's faces: ``train`` and ``val`` (images, landmarks) from the training
    split, the ``test`` split, the whole training split, its landmark scheme and a label."""
    train: Faces
    val: Faces
    test: PreparedSet
    train_set: PreparedSet
    scheme: Scheme
    dataset: str


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
    return RunData(Faces(Subset(train.images, ti), Subset(train.landmarks, ti)),
                   Faces(Subset(train.images, vi), Subset(train.landmarks, vi)),
                   test, train, scheme_for_points(train.landmarks.shape[1]), describe_dataset(train.manifest))


def check_flips(params: Params, scheme: Scheme, mean: np.ndarray, flip_test: bool = False) -> None:
    """Before the mirror map is used (training flips, the flip test), check it on the data.

    Used in: 02_hpsearch, "The objective"."""
    if params.train.flip > 0 or flip_test:
        check_mirror(scheme, mean, params.data.crop_size)
