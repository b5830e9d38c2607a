"""Params: the built-in defaults, loading a YAML file, ``-p key=value`` overrides, validation.

Every key is documented in ``DOCS`` (and in the README). A params file only lists what it
changes, from the defaults or from the file its ``base:`` key names. Relative paths in a file are relative to that file's folder; in an override,
relative to the current folder. Loading refuses unknown keys (with a did-you-mean) and
wrong types before anything runs.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path

import yaml

DEFAULTS: dict = {
    "name": "quick",
    "seed": 0,
    "data": {
        "source": "synthetic",
        "root": None,
        "extra_train": [],
        "synthetic_train": 800,
        "synthetic_test": 200,
        "crop_size": 300,
        "forehead": 1 / 3,
        "padding": 0.05,
        "val_fraction": 0.2,
        "split": "clean",
        "cache_dir": None,
        "on_bad_sample": "error",
    },
    "model": {"input_size": 256, "pretrained": False, "head_init": "default", "compile": False},
    "train": {
        "epochs": 100,
        "batch_size": 64,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "epoch_multiplier": 4,
        "rotation": 20.0,
        "crop_fraction": 245 / 256,
        "intensity": [0.5, 1.5],
        "flip": 0.0,
        "scale": [1.0, 1.0],
        "shift": 0.0,
        "edges": [0.0, 0.0, 0.0, 0.0],
        "loss": "mse",
        "wing": [10.0, 2.0],
        "schedule": "none",
        "warmup": 0,
        "optimizer": "adam",
        "device": "auto",
        "resident": "auto",
        "prefetch": "auto",
        "autocast": "auto",
        "channels_last": "auto",
        "processes": 1,
        "resume": False,
    },
    "search": {
        "enabled": True,
        "trials": 10,
        "epochs_per_trial": 10,
        "lr_range": [1e-5, 1e-2],
        "weight_decay_range": [1e-6, 1e-2],
        "storage": None,
        "study_name": "hpsearch",
    },
    "eval": {"thresholds": [0.08, 0.10], "ced_max": 0.3, "flip_test": False, "detector_box": True},
    "ablation": {"variants": [], "seeds": [0, 1], "epochs": 0},
}

DOCS: dict = {
    "name": "run name, used for the default run folder reports/<name>",
    "seed": "seed for data generation, the split, initialisation, shuffling, augmentation and the search",
    "data.source": "synthetic (built-in procedural faces), helen (official Helen layout) or 300w (NAME.jpg + NAME.pts in trainset/ and testset/)",
    "data.root": "folder of the helen or 300w data set; relative paths are relative to the params file; ${VAR} and ${VAR:-default} expand",
    "data.extra_train": "more 300-W style folders (NAME.jpg + NAME.pts, any depth) added to the training images, e.g. AFW",
    "data.synthetic_train": "number of synthetic training faces (source synthetic)",
    "data.synthetic_test": "number of synthetic test faces (source synthetic)",
    "data.crop_size": "side of the square crop cached for every face, pixels (study: 300)",
    "data.forehead": "the landmark box is extended upward by this fraction of its height",
    "data.padding": "padding on every side, fraction of the larger side of the box",
    "data.val_fraction": "fraction of training images held out for validation",
    "data.split": "clean: validation images never trained on; paper: the study's protocol (validation = augmented copies of training images)",
    "data.cache_dir": "where prepared caches live (default <run>/data); share one across runs to prepare once",
    "data.on_bad_sample": "error: a bad image or annotation stops preparation, naming the file; skip: leave it out and list it in the manifest and the report",
    "model.input_size": "network input side in pixels (study: 256); metrics are always reported in pixels of 256x256",
    "model.pretrained": "start from torchvision's ImageNet weights (needs network or the file in torchvision's cache)",
    "model.head_init": "default (torchvision's init) or mean_shape (the last layer starts at the mean training shape)",
    "model.compile": "torch.compile the model for training (a GPU speed-up for long runs; compiling takes a minute)",
    "train.epochs": "training epochs (study: 100)",
    "train.batch_size": "images per step (study: 64)",
    "train.lr": "Adam learning rate used when the search is disabled",
    "train.weight_decay": "Adam weight decay used when the search is disabled",
    "train.epoch_multiplier": "augmented samples per training image per epoch (study: 4, 8,000 from 2,000)",
    "train.rotation": "random rotation up to +- this many degrees (study: 20)",
    "train.crop_fraction": "random crop of this fraction of the input, scaled back (study: 245/256)",
    "train.intensity": "random intensity factor range [low, high] (study: [0.5, 1.5])",
    "train.flip": "probability of a horizontal flip, landmarks renumbered by the scheme's mirror map (study: 0)",
    "train.scale": "box jitter: the crop's side is multiplied by U(low, high) (> 1 zooms out), so the model copes with a face detector's box (study: [1, 1], none)",
    "train.shift": "box jitter: the crop moves by up to +- this fraction of its side in x and y (study: 0)",
    "train.edges": "box jitter per edge [left, top, right, bottom]: each edge of the crop moves on its own by N(0, sigma) x its side, clipped at 2 sigma, as a calibrated face detector's box does (study: none)",
    "train.loss": "training loss: mse (study), l1 or wing; validation and test are always reported as MSE",
    "train.wing": "Wing loss [width, curvature] in pixels of the 256x256 frame (Feng et al. 2018: [10, 2])",
    "train.schedule": "learning-rate schedule: none (study), cosine (to zero over train.epochs) or step (x0.1 at 50% and 75%)",
    "train.warmup": "epochs of linear learning-rate warm-up before the schedule (study: 0)",
    "train.optimizer": "adam (study: weight decay added to the gradient) or adamw (decoupled weight decay)",
    "train.device": "auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...",
    "train.resident": "auto, true or false: the training set as one uint8 tensor on the device (auto: on CUDA; else a memory map)",
    "train.prefetch": "auto, true or false: gather and augment the next batch in a background thread (auto: on CUDA)",
    "train.autocast": "auto, none, bfloat16 or float16 (with a gradient scaler): mixed precision of the forward pass (auto: bfloat16 on CUDA, none on CPU)",
    "train.channels_last": "auto, true or false: NHWC memory layout for the model and its batches (auto: true)",
    "train.processes": "data-parallel processes for training (DistributedDataParallel through torchrun, one per GPU); train.batch_size is the global batch",
    "train.resume": "continue training from <run>/train/last.pt",
    "search.enabled": "run the random search; when false, train.lr and train.weight_decay are used",
    "search.trials": "number of search trials (all workers together)",
    "search.epochs_per_trial": "training epochs per trial (study: 10)",
    "search.lr_range": "log-uniform range of the learning rate [low, high]",
    "search.weight_decay_range": "log-uniform range of the weight decay [low, high]",
    "search.storage": "Optuna storage URL (default sqlite:///<run>/search/optuna.db); share one database URL between workers",
    "search.study_name": "Optuna study name inside the storage",
    "eval.thresholds": "NME thresholds for AUC and failure rate",
    "eval.ced_max": "largest NME shown on the CED curve",
    "eval.flip_test": "average each prediction with the un-mirrored prediction of the mirrored crop (points renumbered by the scheme's mirror map)",
    "ablation.variants": "params files of the ablation's rows, each the study's recipe (params/ablation/1-study.yaml) changed by a few keys, its name: the row's label; default: params/ablation/*.yaml in name order",
    "ablation.seeds": "seeds every ablation row is trained with (mean and spread are reported)",
    "ablation.epochs": "training epochs of each ablation run; 0: the run's train.epochs",
    "eval.detector_box": "also run the model end to end on the original test photos from its face detector's boxes (needs dlib and a box calibration)",
}

_PATH_KEYS = {"data.root", "data.cache_dir", "data.extra_train", "ablation.variants"}
_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_path(value: str, base: Path) -> str:
    """``${VAR}`` and ``${VAR:-default}`` from the environment, then relative to ``base``."""
    def sub(m):
        if m.group(1) in os.environ:
            return os.environ[m.group(1)]
        if m.group(2) is None:
            raise ParamsError(f"path {value!r}: environment variable {m.group(1)} is not set")
        return m.group(2)

    return str((base / _ENV.sub(sub, value)).resolve())


def _resolve_paths(key: str, value, base: Path):
    if key not in _PATH_KEYS:
        return value
    if isinstance(value, str):
        return expand_path(value, base)
    if isinstance(value, list):
        return [expand_path(v, base) if isinstance(v, str) else v for v in value]
    return value
_CHOICES = {"data.source": {"synthetic", "helen", "300w"}, "data.split": {"clean", "paper"},
            "data.on_bad_sample": {"error", "skip"},
            "model.head_init": {"default", "mean_shape"}, "train.loss": {"mse", "l1", "wing"},
            "train.schedule": {"none", "cosine", "step"}, "train.optimizer": {"adam", "adamw"},
            "train.autocast": {"auto", "none", "bfloat16", "float16"}}
_AUTO_OR_BOOL = {"train.resident", "train.prefetch", "train.channels_last"}
_POSITIVE = {"data.synthetic_train", "data.synthetic_test", "data.crop_size", "model.input_size", "train.epochs",
             "train.batch_size", "train.lr", "train.epoch_multiplier", "train.processes", "search.trials", "search.epochs_per_trial"}


MIN_INPUT_SIZE = 32
# common names for lmkit's keys, for did-you-mean
ALIASES = {"learning_rate": "lr", "wd": "weight_decay", "n_epochs": "epochs", "num_epochs": "epochs",
           "batch": "batch_size", "bs": "batch_size", "n_trials": "trials", "scheduler": "schedule",
           "lr_schedule": "schedule", "image_size": "input_size", "img_size": "input_size", "augment_flip": "flip"}
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class ParamsError(ValueError):
    pass


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set(tree: dict, dotted: str, value, origin: str) -> None:
    known = _flatten(DEFAULTS)
    if dotted not in known:
        prefix, _, leaf = dotted.rpartition(".")
        alias = f"{prefix}.{ALIASES[leaf]}" if leaf in ALIASES else None
        close = [alias] if alias in known else difflib.get_close_matches(dotted, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ParamsError(f"{origin}: unknown key {dotted!r}{hint}")
    node = tree
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = _coerce(value, known[dotted])


def _coerce(value, want):
    """PyYAML reads 1e-3 as a string (YAML 1.1 wants 1.0e-3): accept numbers written so."""
    if isinstance(want, float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(want, list) and isinstance(value, list) and want and isinstance(want[0], float):
        return [_coerce(v, 0.0) for v in value]
    return value


def _check(flat: dict) -> None:
    defaults = _flatten(DEFAULTS)
    for key, value in flat.items():
        want = defaults[key]
        if value is None and (want is None or key in _PATH_KEYS):
            continue
        if key in _AUTO_OR_BOOL:
            if value != "auto" and not isinstance(value, bool):
                raise ParamsError(f"{key}: auto, true or false, got {value!r}")
            continue
        ok = {bool: lambda v: isinstance(v, bool),
              int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              str: lambda v: isinstance(v, str),
              list: lambda v: isinstance(v, list)}
        kind = type(want) if want is not None else str
        if not ok[kind](value):
            raise ParamsError(f"{key}: expected {kind.__name__}, got {value!r}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ParamsError(f"{key}: must be one of {sorted(_CHOICES[key])}, got {value!r}")
        if key in _POSITIVE and value <= 0:
            raise ParamsError(f"{key}: must be positive, got {value!r}")
        if kind is list and key in _PATH_KEYS:
            if any(not isinstance(v, str) for v in value):
                raise ParamsError(f"{key}: expected a list of paths, got {value!r}")
            continue
        if kind is list and any(not ok[float](v) for v in value):
            raise ParamsError(f"{key}: expected a list of numbers, got {value!r}")
        if kind is list and isinstance(want, list) and len(value) != len(want) and not key.startswith(("eval.", "ablation.")):
            raise ParamsError(f"{key}: expected a list of {len(want)} values, got {value!r}")
    if flat["model.input_size"] < MIN_INPUT_SIZE:
        raise ParamsError(f"model.input_size: ResNet18 needs at least {MIN_INPUT_SIZE} pixels (it downsamples by 32), "
                          f"got {flat['model.input_size']}")
    if not _DEVICE.fullmatch(flat["train.device"]):
        raise ParamsError(f"train.device: auto, cpu, cuda, cuda:N or mps, got {flat['train.device']!r}")
    if not 0 < flat["train.crop_fraction"] <= 1:
        raise ParamsError(f"train.crop_fraction: must be in (0, 1], got {flat['train.crop_fraction']}")
    if flat["train.batch_size"] % flat["train.processes"]:
        raise ParamsError(f"train.batch_size: {flat['train.batch_size']} must be divisible by "
                          f"train.processes ({flat['train.processes']})")
    if not 0 <= flat["train.flip"] <= 1:
        raise ParamsError(f"train.flip: a probability between 0 and 1, got {flat['train.flip']}")
    if not 0 < flat["data.val_fraction"] < 1:
        raise ParamsError(f"data.val_fraction: must be between 0 and 1, got {flat['data.val_fraction']}")
    if flat["train.warmup"] < 0 or flat["train.warmup"] >= flat["train.epochs"]:
        raise ParamsError(f"train.warmup: must be at least 0 and fewer than train.epochs ({flat['train.epochs']}), "
                          f"got {flat['train.warmup']}")
    if not 0 <= flat["train.shift"] < 0.5:
        raise ParamsError(f"train.shift: a fraction of the crop in [0, 0.5), got {flat['train.shift']}")
    edges = flat["train.edges"]
    if not isinstance(edges, list) or len(edges) != 4 or any(not 0 <= v < 0.25 for v in edges):
        raise ParamsError(f"train.edges: four fractions of the crop (left, top, right, bottom), each in [0, 0.25), "
                          f"got {edges}")
    if min(flat["train.wing"]) <= 0:
        raise ParamsError(f"train.wing: width and curvature must be positive, got {flat['train.wing']}")
    if not flat["ablation.seeds"] or any(not ok_int(v) for v in flat["ablation.seeds"]):
        raise ParamsError(f"ablation.seeds: expected a list of integer seeds, got {flat['ablation.seeds']}")
    if flat["ablation.epochs"] < 0:
        raise ParamsError(f"ablation.epochs: 0 (the run's train.epochs) or more, got {flat['ablation.epochs']}")
    for key in ("search.lr_range", "search.weight_decay_range", "train.intensity", "train.scale"):
        lo, hi = flat[key]
        if not 0 < lo <= hi:
            raise ParamsError(f"{key}: want 0 < low <= high, got {flat[key]}")


def ok_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_changes(path: str | Path, own: bool = False) -> dict:
    """The keys a params file sets (after its ``base:`` files; with ``own``, only the file's
    own keys), without the defaults: {dotted key: value}. An ablation variant is such a set."""
    changes = {}
    for key, value, origin in _read_file(Path(path)):
        if own and origin != str(Path(path)):
            continue
        _set(copy.deepcopy(DEFAULTS), key, value, origin)  # an unknown key is refused, naming the file
        changes[key] = _coerce(value, _flatten(DEFAULTS)[key])
    return changes


def parse_override(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"override {text!r}: expected key=value, e.g. train.epochs=3")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        problem = str(e).splitlines()[0]
        raise ParamsError(f"override {key.strip()}: the value {raw!r} is not valid YAML ({problem}); "
                          "quote a string, e.g. -p name='\"my run\"'") from None


def _read_file(path: Path, seen: tuple = ()) -> list[tuple[str, object, str]]:
    """(key, value, origin) of a params file, after those of its ``base`` file if it names one."""
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    if path.resolve() in seen:
        raise ParamsError(f"{path}: 'base' files form a cycle")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(loaded, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of keys")
    items = []
    base = loaded.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ParamsError(f"{path}: base: expected the name of another params file, got {base!r}")
        items = _read_file(path.parent / base, seen + (path.resolve(),))
    return items + [(k, _resolve_paths(k, v, path.parent), str(path)) for k, v in _flatten(loaded).items()]


def load(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> dict:
    """Defaults, then the file, then the overrides; validated; paths made absolute."""
    params = copy.deepcopy(DEFAULTS)
    if path is not None:
        for key, value, origin in _read_file(Path(path)):
            _set(params, key, value, origin)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or [])
    for key, value in items:
        _set(params, key, _resolve_paths(key, value, Path.cwd()), f"override {key}")
    _check(_flatten(params))
    return params


def merge(params: dict, changes: dict) -> dict:
    """A validated copy of ``params`` with ``changes`` ({dotted key: value}) applied."""
    out = copy.deepcopy(params)
    for key, value in changes.items():
        _set(out, key, value, f"change {key}")
    _check(_flatten(out))
    return out


def dump(params: dict, path: Path) -> None:
    from .runfolder import write_text

    write_text(yaml.safe_dump(params, sort_keys=False), path)
