"""Params: one typed schema (every key once: type, default, range, doc), loading a YAML file,
``-p key=value`` overrides, validation.

``Params`` below is the only description of the keys: the defaults (``DEFAULTS``), the docs
(``DOCS``), validation and the table in docs/params.md (``python -m lmkit.run.params --docs``) all come
from it. A params file only lists what it changes, from the defaults or from the file its
``base:`` key names. Relative paths in a file are relative to that file's folder; in an
override, relative to the current folder. Loading refuses unknown keys (with a
did-you-mean), wrong types and out-of-range values before anything runs.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)

MIN_INPUT_SIZE = 32


def key(
    default,
    doc: str,
    *,
    shown: str | None = None,
    path: bool = False,
    contents: bool = False,
    **limits,
):
    """One key of the schema: its default, its doc (docs/params.md's "meaning"), how that table
    shows the default when not as YAML would, whether it holds paths, whether a file it names
    counts by its contents (a weights file: a run is reused, and a search study shared, only while
    the file's bytes are the same), and its limits."""
    extra = {name: v for name, v in (("shown", shown), ("path", path), ("contents", contents)) if v}
    return Field(default, description=doc, json_schema_extra=extra or None, **limits)


def _low_high(v: list[float]) -> list[float]:
    if not 0 < v[0] <= v[1]:
        raise ValueError("want 0 < low <= high")
    return v


def _auto_or_bool(v):
    if v != "auto" and not isinstance(v, bool):
        raise ValueError("auto, true or false")
    return v


def _device(v):
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
        raise ValueError("auto, cpu, cuda, cuda:N or mps")
    return v


def _input_size(v: int) -> int:
    if v < MIN_INPUT_SIZE:
        raise ValueError(f"ResNet18 needs at least {MIN_INPUT_SIZE} pixels (it downsamples by 32)")
    return v


Pair = Annotated[list[float], Field(min_length=2, max_length=2)]
LowHigh = Annotated[Pair, AfterValidator(_low_high)]
AutoOrBool = Annotated[bool | str, PlainValidator(_auto_or_bool)]
Positive = Annotated[int, Field(gt=0)]


class _Section(BaseModel):
    """A validated, read-only group of keys, read as attributes: ``params.train.epochs``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def __getitem__(self, name: str):
        """``params["train"]["epochs"]`` reads ``params.train.epochs``: notebook cells written when
        the params were a nested dict keep working."""
        if name not in type(self).model_fields:
            raise KeyError(name)
        return getattr(self, name)


class Data(_Section):
    source: Literal["synthetic", "helen", "300w"] = key(
        "synthetic",
        "synthetic (built-in procedural faces), helen (official Helen layout) or 300w (`NAME.jpg` + "
        "`NAME.pts` in `trainset/` and `testset/`)",
    )
    root: str | None = key(
        None,
        "folder of the helen or 300w data set; relative to the params file; `${VAR}` and "
        "`${VAR:-default}` expand from the environment",
        path=True,
    )
    extra_train: list[str] = key(
        [],
        "more 300-W style folders (`NAME.jpg` + `NAME.pts`, any depth) added to the "
        "training images, e.g. AFW",
        path=True,
    )
    joint_train: list[str] = key(
        [],
        "300-W style folders (`NAME.jpg` + `NAME.pts`) of faces annotated in another "
        "landmark scheme (AFW's 68 points beside Helen's 194), trained beside the data set "
        "through outputs of their own on the shared backbone (one head per point set, as "
        "mmpose's combined data sets); never validated or tested on; the model file keeps "
        "the data set's points only",
        path=True,
    )
    synthetic_train: Positive = key(800, "number of synthetic training faces (source synthetic)")
    synthetic_test: Positive = key(200, "number of synthetic test faces (source synthetic)")
    crop_size: Positive = key(
        300, "side of the square crop cached for every face, pixels (study: 300)"
    )
    forehead: float = key(
        1 / 3,
        "the landmark box is extended upward by this fraction of its height",
        shown="1/3",
        ge=0,
    )
    padding: float = key(
        0.05,
        "padding on every side: a fraction of the larger side of the box; with "
        "`data.box: study`, whole pixels of the original photo (the study: 5)",
        ge=0,
    )
    box: Literal["landmarks", "study", "eyes-mouth"] = key(
        "landmarks",
        "the crop box before padding: landmarks (lmkit's: the box of all landmarks with "
        "`data.forehead`), study (the study's crop_face.py: the same box on whole pixels, `data.padding` photo "
        "pixels on every side, its clipping) or eyes-mouth (placed and sized from the eye and mouth centres only, "
        "blind to the jaw as a face detector's box is)",
    )
    val_fraction: float = key(
        0.2, "fraction of training images held out for validation", gt=0, lt=1
    )
    split: Literal["clean", "paper"] = key(
        "clean",
        "clean: validation images never trained on; paper: the study's protocol (validation = augmented "
        "copies of training images)",
    )
    final: bool = key(
        False,
        "the final model, once a recipe is chosen on validation: train on the training and "
        "validation photos together for exactly `train.epochs` (the chosen run's), keep the last epoch "
        "(nothing is held out to pick one by); the test faces stay the test. The validation numbers "
        "and a bias correction (`model.bias_correction`) then come from faces the model trained on, "
        "and the report says so",
    )
    cache_dir: str | None = key(
        None,
        "where prepared caches live (default `<run>/data`); share one across runs to prepare once",
        path=True,
    )
    on_bad_sample: Literal["error", "skip"] = key(
        "error",
        "error: a bad image or annotation stops preparation, naming the file; skip: leave it out, listed "
        "with its reason in the manifest and the report",
    )


HEADS = (
    "regression",
    "heatmap",
    "heatmap-s4",
)  # model.head's choices, read by lmkit.study.model too
DETECTORS = ("hog", "hog-coarse")  # model.detector's choices, read by lmkit.use.detector too
# train keys that do not change what is trained: whether it continues a checkpoint and keeps them
# (the system section as a whole is the other such set). Read by the chain's reuse, the search
# study's name and the model file's record of its recipe.
NOT_RESULTS = ("resume", "keep_checkpoints")


class Model(_Section):
    input_size: Annotated[int, AfterValidator(_input_size)] = key(
        256,
        "network input side in pixels (study: 256); metrics are always reported in pixels of 256x256",
    )
    pretrained: bool | str = key(
        False,
        "the backbone's start: false (random), true (torchvision's ImageNet weights: needs the network or "
        "the file in torchvision's cache) or the path of a saved torchvision ResNet18 state dict (torchvision's "
        "`resnet18-f37072fd.pth` offline, or a pretraining stage's backbone); its `fc` layer is not used",
        path=True,
        contents=True,
    )
    head: Literal[HEADS] = key(
        "regression",
        "regression (the study: global pooling and a linear layer), heatmap (integral regression: "
        "one heatmap per point at stride 8 from layers 2-4, a soft-argmax to coordinates) or heatmap-s4 (the same "
        "at stride 4, from layers 1-4)",
    )
    head_init: Literal["default", "mean_shape"] = key(
        "default",
        "default (torchvision's init) or mean_shape (the last layer starts at the mean training shape; "
        "regression head only)",
    )
    view: Literal["whole", "train-mean"] = key(
        "whole",
        "what the network sees of a crop at validation, test and prediction: whole (the study: the whole "
        "crop resized) or train-mean (the centre of the crop at the mean training crop, `train.crop_fraction` x "
        "the mean of `train.scale`, the scale at which training showed faces)",
    )
    bias_correction: bool = key(
        False,
        "when the model file is written, fit each point's mean error on the "
        "validation split and subtract it from every later prediction (needs "
        "`data.split: clean`)",
    )
    recrop: int = key(
        0,
        "from a face detector's box, cut the face out again from the points found (by the crop "
        "convention of training) and predict again, this many times; written into the model file "
        "(`lmkit predict`, the evaluation's detector rows)",
        ge=0,
        le=5,
    )
    detector: Literal[DETECTORS] = key(
        "hog-coarse",
        "the face detector the model file's box calibration is fitted for, and `lmkit predict` "
        "uses: hog (dlib's HOG frontal-face detector, the photo upsampled once: faces down to about 40 px) or "
        "hog-coarse (the same, first on the photo shrunk to 240 px without upsampling; the full search only "
        "where that finds no face: several times faster on photos of one large face)",
    )


class Train(_Section):
    epochs: Positive = key(100, "training epochs (study: 100)")
    batch_size: Positive = key(64, "images per step (study: 64)")
    lr: float = key(1e-3, "Adam learning rate, used when the search is disabled", gt=0)
    weight_decay: float = key(1e-4, "Adam weight decay, used when the search is disabled", ge=0)
    epoch_multiplier: Positive = key(
        4, "augmented samples per training image per epoch (study: 4, i.e. 8,000 from 2,000)"
    )
    rotation: float = key(
        20.0, "random rotation up to +- this many degrees (study: 20)", ge=0, le=180
    )
    crop_fraction: float = key(
        245 / 256,
        "random crop of this fraction of the input, scaled back (study: 245 of 256)",
        shown="245/256",
        gt=0,
        le=1,
    )
    intensity: LowHigh = key(
        [0.5, 1.5], "random intensity factor range [low, high] (study: x0.5 to x1.5)"
    )
    flip: float = key(
        0.0,
        "probability of a horizontal flip, landmarks renumbered by the scheme's mirror map "
        "(study: 0); the map is first checked against the data",
        ge=0,
        le=1,
    )
    scale: LowHigh = key(
        [1.0, 1.0],
        "box jitter: the crop's side times U(low, high), > 1 zooms out (study: none); "
        "makes the model robust to a face detector's box",
    )
    shift: float = key(
        0.0,
        "box jitter: the crop moves by up to +- this fraction of its side in x and y (study: 0)",
        ge=0,
        lt=0.5,
    )
    edges: Annotated[
        list[Annotated[float, Field(ge=0, lt=0.25)]], Field(min_length=4, max_length=4)
    ] = key(
        [0.0, 0.0, 0.0, 0.0],
        "box jitter per edge [left, top, right, bottom]: each edge of the crop moves on its "
        "own by N(0, sigma) x its side, clipped at 2 sigma, as a calibrated face detector's box does (study: none)",
    )
    loss: Literal["mse", "l1", "wing"] = key(
        "mse",
        "training loss: mse (study), l1 or wing; validation and test are always reported as MSE",
    )
    wing: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=2, max_length=2)] = key(
        [10.0, 2.0],
        "Wing loss [width, curvature] in pixels of the 256x256 frame (Feng et al. 2018)",
    )
    heatmap_loss: float = key(
        0.0,
        "weight of the DSNT regulariser (heatmap heads): the Jensen-Shannon divergence (nats) between each "
        "point's heatmap and a Gaussian of one cell at its true position, added to the loss (pixels of the 256 "
        "frame)",
        ge=0,
    )
    schedule: Literal["none", "cosine", "step"] = key(
        "none",
        "learning-rate schedule: none (study), cosine (to zero over `train.epochs`) or step (x0.1 at 50% "
        "and 75%)",
    )
    warmup: int = key(
        0, "epochs of linear learning-rate warm-up before the schedule (study: 0)", ge=0
    )
    optimizer: Literal["adam", "adamw"] = key(
        "adam", "adam (study: weight decay added to the gradient) or adamw (decoupled weight decay)"
    )
    resume: bool = key(False, "continue training from `<run>/train/last.pt`")
    keep_checkpoints: bool = key(
        False,
        "after a finished training keep `train/last.pt` and `previous.pt` (with the "
        "optimizer state, to resume with more epochs); else only `best.pt`'s weights stay",
    )

    @model_validator(mode="after")
    def _together(self):
        if self.warmup >= self.epochs:
            raise ValueError(
                f"train.warmup: must be fewer than train.epochs ({self.epochs}), got {self.warmup}"
            )
        return self


class System(_Section):
    """Where and how fast a run trains, never what it trains: each key changes no result beyond the
    last digits (``auto`` is lmkit's choice for the machine)."""

    device: Annotated[str, PlainValidator(_device)] = key(
        "auto", "auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ..."
    )
    resident: AutoOrBool = key(
        "auto",
        "auto, true or false: the training set as one uint8 tensor on the device "
        "(auto: on CUDA; on the CPU a memory map)",
    )
    prefetch: AutoOrBool = key(
        "auto",
        "auto, true or false: gather and augment the next batch in a background "
        "thread (auto: on CUDA)",
    )
    autocast: Literal["auto", "none", "bfloat16", "float16"] = key(
        "auto",
        "mixed precision of the forward pass: none, bfloat16, or float16 with a gradient scaler (auto: "
        "bfloat16 where the device computes it natively (CUDA compute capability 8.0 and up, CPUs with AVX-512 "
        "BF16 or AMX), float16 on older CUDA cards, none on other CPUs; validation and prediction on a CPU: none)",
    )
    channels_last: AutoOrBool = key(
        "auto", "auto, true or false: NHWC memory layout of model and batches (auto: true)"
    )
    processes: Positive = key(
        1,
        "data-parallel training processes (DistributedDataParallel through torchrun, one "
        "per GPU); `train.batch_size` is the global batch",
    )
    compile: bool = key(
        False,
        "`torch.compile` the model for training (a GPU speed-up for long runs; compiling "
        "takes a minute)",
    )


class Search(_Section):
    enabled: bool = key(
        True, "run the random search; when false, `train.lr` and `train.weight_decay` are used"
    )
    trials: Positive = key(10, "number of search trials (all workers together)")
    epochs_per_trial: Positive = key(10, "training epochs per trial (study: 10)")
    lr_range: LowHigh = key([1e-5, 1e-2], "log-uniform range of the learning rate [low, high]")
    weight_decay_range: LowHigh = key(
        [1e-6, 1e-2], "log-uniform range of the weight decay [low, high]"
    )
    storage: str | None = key(
        None,
        "Optuna storage URL (default `sqlite:///<run>/search/optuna.db`); share one "
        "database URL between workers",
    )
    study_name: str = key("hpsearch", "Optuna study name inside the storage")


class Eval(_Section):
    thresholds: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = key(
        [0.08, 0.10], "NME thresholds for AUC and failure rate"
    )
    ced_max: float = key(0.3, "largest NME shown on the CED curve", gt=0)
    flip_test: bool = key(
        False,
        "average each prediction with the un-mirrored prediction of the mirrored crop "
        "(the scheme's mirror map, checked against the data first)",
    )
    detector_box: bool = key(
        True,
        "on real photos, also run the model end to end from its face detector's boxes "
        '(the row "ResNet18, its detector box"; needs dlib and a box calibration)',
    )
    ert: AutoOrBool = key(
        "auto",
        "the classical peer: dlib's ERT shape predictor trained on the run's training faces (any "
        "point count), scored on the same test faces in their annotation box; auto: on real photos, "
        "not on synthetic faces. Trained once per set of training faces and options, then reused",
    )
    ert_trees: Positive = key(500, "ERT: regression trees per cascade level (dlib's default)")
    ert_cascades: Positive = key(10, "ERT: cascade levels (dlib's default)")


class Ablation(_Section):
    variants: list[str] = key(
        [],
        "the ablation's rows as params files (each the study's recipe "
        "`params/ablation/1-study.yaml` plus a few keys; its `name:` labels the row); default "
        "`params/ablation/*.yaml` in name order",
        path=True,
    )
    seeds: Annotated[list[int], Field(min_length=1)] = key(
        [0, 1],
        "every ablation row is trained once per seed; the table shows the mean, lowest and highest",
    )
    epochs: int = key(0, "training epochs of each ablation run; 0: the run's `train.epochs`", ge=0)


class Params(_Section):
    """Every key lmkit reads from a params file, in the order of docs/params.md's table."""

    name: str = key("quick", "run name, used for the default run folder `reports/<name>`")
    seed: int = key(
        0,
        "seed for data generation, the split, initialisation, shuffling, augmentation and the search",
    )
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()
    system: System = System()
    search: Search = Search()
    eval: Eval = Eval()
    ablation: Ablation = Ablation()

    @model_validator(mode="after")
    def _together(self):
        if self.train.batch_size % self.system.processes:
            raise ValueError(
                f"train.batch_size: {self.train.batch_size} must be divisible by system.processes "
                f"({self.system.processes})"
            )
        if self.model.bias_correction and self.data.split != "clean":
            raise ValueError(
                "model.bias_correction: needs data.split clean (validation photos never trained on), "
                f"got data.split {self.data.split!r}"
            )
        if self.model.head != "regression" and self.model.head_init == "mean_shape":
            raise ValueError(
                "model.head_init: mean_shape starts the regression head only; use default with "
                "model.head: heatmap"
            )
        if self.train.heatmap_loss and self.model.head == "regression":
            raise ValueError(
                "train.heatmap_loss: the regression head has no heatmaps to shape; set it to 0 or use "
                "model.head: heatmap"
            )
        if self.data.joint_train and self.data.source == "synthetic":
            raise ValueError(
                "data.joint_train: needs a real data set (data.source helen or 300w), got synthetic"
            )
        if self.data.joint_train and self.data.split != "clean":
            raise ValueError(
                "data.joint_train: needs data.split clean (the study's augmented validation copies would "
                f"be flipped with both schemes' mirror map), got data.split {self.data.split!r}"
            )
        if self.data.box == "study" and self.data.padding != int(self.data.padding):
            raise ValueError(
                f"data.padding: with data.box study it is whole pixels of the photo (the study: 5), "
                f"got {self.data.padding}"
            )
        return self


def _fields(model: type[BaseModel] = Params, prefix: str = "") -> dict:
    """{dotted key: pydantic FieldInfo} of every key, in the schema's order."""
    out = {}
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            out.update(_fields(info.annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = info
    return out


FIELDS = _fields()
DEFAULTS = Params()  # every key at its default, typed: DEFAULTS.train.lr
_DEFAULT_TREE: dict = DEFAULTS.model_dump()
DOCS: dict = {k: f.description for k, f in FIELDS.items()}
# keys whose values are paths (made absolute on load, relative to the params file)
PATH_KEYS = {k for k, f in FIELDS.items() if (f.json_schema_extra or {}).get("path")}
CONTENT_KEYS = {
    k for k, f in FIELDS.items() if (f.json_schema_extra or {}).get("contents")
}  # files compared by their bytes


def _shown(value) -> str:
    """A default as docs/params.md shows it (YAML, numbers short)."""
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).split("\n")[0]
    if isinstance(value, float):
        return f"{value:.0e}".replace("e-0", "e-") if 0 < abs(value) < 0.01 else f"{value:g}"
    return str(value)


def markdown_table() -> str:
    """docs/params.md's params table, from the schema."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for k, f in FIELDS.items():
        shown = (f.json_schema_extra or {}).get("shown") or _shown(_FLAT_DEFAULTS[k])
        rows.append(f"| `{k}` | {shown} | {f.description} |")
    return "\n".join(rows) + "\n"


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
    if key not in PATH_KEYS:
        return value
    if isinstance(value, str):
        return expand_path(value, base)
    if isinstance(value, list):
        return [expand_path(v, base) if isinstance(v, str) else v for v in value]
    return value


# common names for lmkit's keys, for did-you-mean
ALIASES = {
    "learning_rate": "lr",
    "wd": "weight_decay",
    "n_epochs": "epochs",
    "num_epochs": "epochs",
    "batch": "batch_size",
    "bs": "batch_size",
    "n_trials": "trials",
    "scheduler": "schedule",
    "lr_schedule": "schedule",
    "image_size": "input_size",
    "img_size": "input_size",
    "augment_flip": "flip",
}


class ParamsError(ValueError):
    pass


# Keys of levers measured not to pay (RESULTS.md keeps their rows), removed from the code after the
# commit named here, with the value that meant "off": a file giving that value (a run folder's
# params.yaml, which lists every key) still loads; any other value is refused, naming the commit
# that runs it.
REMOVED_AFTER = "1825744"
# Keys that said where and how fast among the recipe's, in the system section since: a file (a run
# folder's params.yaml) that names them so still loads, into their new place.
MOVED = {
    f"train.{k}": f"system.{k}"
    for k in ("device", "resident", "prefetch", "autocast", "channels_last", "processes")
} | {"model.compile": "system.compile"}
REMOVED = {
    "train.ema": 0.0,
    "train.teacher": None,
    "train.teacher_weight": 0.5,
    "pretrain.epochs": 30,
    "pretrain.batch_size": 64,
    "pretrain.lr": 1e-3,
    "pretrain.temperature": 0.1,
    "pretrain.cells": 2048,
}


def flatten(d, prefix: str = "") -> dict:
    """{dotted key: value} of params (a ``Params`` or a nested dict), e.g. ``flatten(params)["model.input_size"]``."""
    if hasattr(d, "model_dump"):
        d = d.model_dump()
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


_FLAT_DEFAULTS = flatten(_DEFAULT_TREE)


def _set(tree: dict, dotted: str, value, origin: str) -> None:
    known = _FLAT_DEFAULTS
    dotted = MOVED.get(dotted, dotted)
    if dotted in REMOVED:
        if _coerce(value, REMOVED[dotted]) == REMOVED[dotted]:
            return  # off, as the code now always is
        raise ParamsError(
            f"{origin}: {dotted}: removed from lmkit after commit {REMOVED_AFTER} (measured not to pay: "
            f"RESULTS.md); run it with `git checkout {REMOVED_AFTER}`, or delete the key"
        )
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


_WANT = {
    "int_type": "expected int",
    "float_type": "expected float",
    "bool_type": "expected bool",
    "string_type": "expected str",
    "list_type": "expected list",
    "model_type": "expected a mapping of keys",
}


def _message(err: dict) -> str:
    """One pydantic error as lmkit says it: the dotted key, what was wanted, what was given."""
    names, item = [], None
    for part in err["loc"]:
        if isinstance(part, int):
            item = part
            break
        names.append(part)
    key, kind, ctx, got = ".".join(names), err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "value_error":
        what = str(ctx.get("error", err["msg"]))
        if what.split(":")[0] in FIELDS:  # a check across keys names its key itself
            return what
    elif kind == "literal_error":
        what = f"must be one of {ctx['expected']}"
    elif kind == "greater_than":
        what = "must be positive" if ctx["gt"] == 0 else f"must be greater than {ctx['gt']}"
    elif kind in ("greater_than_equal", "less_than", "less_than_equal"):
        what = {
            "greater_than_equal": "at least",
            "less_than": "less than",
            "less_than_equal": "at most",
        }[kind]
        what = f"must be {what} {next(iter(ctx.values()))}"
    elif kind in ("too_short", "too_long"):
        what = f"expected {_length(key)}"
    else:
        what = _WANT.get(kind, err["msg"])
    if item is not None:
        what = f"item {item} {what}"
    return f"{key}: {what}, got {got!r}"


def _length(key: str) -> str:
    """How many values a list key takes, as the schema says."""
    lo = hi = None
    for m in FIELDS[key].metadata:
        lo, hi = getattr(m, "min_length", lo), getattr(m, "max_length", hi)
    return (
        f"a list of {lo} values" if lo == hi else f"a list of at least {lo} value{'s' * (lo != 1)}"
    )


def _validated(params: dict) -> Params:
    try:
        return Params.model_validate(params)
    except ValidationError as e:
        raise ParamsError(_message(e.errors()[0])) from None


def read_changes(path: str | Path, own: bool = False) -> dict:
    """The keys a params file sets (after its ``base:`` files; with ``own``, only the file's
    own keys), without the defaults: {dotted key: value}. An ablation variant is such a set."""
    changes = {}
    for key, value, origin in _read_file(Path(path)):
        if own and origin != str(Path(path)):
            continue
        _set(
            copy.deepcopy(_DEFAULT_TREE), key, value, origin
        )  # an unknown key is refused, naming the file
        if key not in REMOVED:
            key = MOVED.get(key, key)
            changes[key] = _coerce(value, _FLAT_DEFAULTS[key])
    return changes


def parse_override(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"override {text!r}: expected key=value, e.g. train.epochs=3")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        problem = str(e).splitlines()[0]
        raise ParamsError(
            f"override {key.strip()}: the value {raw!r} is not valid YAML ({problem}); "
            "quote a string, e.g. -p name='\"my run\"'"
        ) from None


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
            raise ParamsError(
                f"{path}: base: expected the name of another params file, got {base!r}"
            )
        items = _read_file(path.parent / base, seen + (path.resolve(),))
    return items + [
        (k, _resolve_paths(k, v, path.parent), str(path)) for k, v in flatten(loaded).items()
    ]


def load(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Params:
    """Defaults, then the file, then the overrides; validated; paths made absolute. The result is
    a read-only ``Params``: ``params.train.epochs``; ``merge`` makes a changed copy."""
    params = copy.deepcopy(_DEFAULT_TREE)
    if path is not None:
        for key, value, origin in _read_file(Path(path)):
            _set(params, key, value, origin)
    items = (
        overrides.items()
        if isinstance(overrides, dict)
        else (parse_override(o) for o in overrides or [])
    )
    for key, value in items:
        _set(params, key, _resolve_paths(key, value, Path.cwd()), f"override {key}")
    return _validated(params)


def merge(params, changes: dict) -> Params:
    """A validated copy of ``params`` (a ``Params`` or a nested dict) with ``changes`` ({dotted
    key: value}) applied."""
    out = params.model_dump() if hasattr(params, "model_dump") else copy.deepcopy(params)
    for key, value in changes.items():
        _set(out, key, value, f"change {key}")
    return _validated(out)


def value(params, dotted: str):
    """One key's value by its dotted name, e.g. ``value(params, "model.input_size")``."""
    node = params
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def dump(params, path: Path) -> None:
    from lmkit.run.folder import write_text

    tree = params.model_dump() if hasattr(params, "model_dump") else params
    write_text(yaml.safe_dump(tree, sort_keys=False), path)


if (
    __name__ == "__main__"
):  # python -m lmkit.run.params [--docs]: print the params table, or rewrite docs/params.md's
    import sys

    table = markdown_table()
    if "--docs" not in sys.argv:
        print(table, end="")
    else:
        readme = Path(__file__).resolve().parents[2] / "docs" / "params.md"
        text = readme.read_text()
        start = text.index("| key | default | meaning |")
        end = text.index("\n\n", start) + 1
        readme.write_text(text[:start] + table + text[end:])
        print(f"{readme}: params table rewritten ({len(FIELDS)} keys)")
