"""What a model file says about its weights (``ModelInfo``): the landmark scheme, the input
size, the crop convention, the normalisation, the mean shape, the box calibration, the recipe.
Plain data, no PyTorch: a copy of it travels in the model file (``lmkit.study.model``) and in the
metadata of its ONNX copy (``lmkit.use.export``), so a photo can be read without importing torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

MODEL_FORMAT = "lmkit-model/1"
REFERENCE_SIZE = (
    256  # the study's network input; points come out, and MSE is reported, in its pixels
)
# ImageNet's channel statistics, as torchvision's pretrained weights expect (augment.normalize uses them)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def view_fraction(view: str, crop_fraction: float, scale) -> float:
    """The side of the crop the network sees at evaluation, as a fraction of the crop
    (``model.view``): 1 for ``whole``; for ``train-mean`` the mean training crop, ``crop_fraction``
    x the mean of the box jitter's ``scale`` range (per-edge jitter is centred: no change)."""
    if view == "whole":
        return 1.0
    if view == "train-mean":
        return float(crop_fraction * (scale[0] + scale[1]) / 2)
    raise ValueError(f"model.view: must be 'whole' or 'train-mean', got {view!r}")


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about its weights: enough to use them on any photo."""

    scheme: str  # landmark scheme (lmkit.study.schemes), e.g. ibug68
    n_points: int
    input_size: int  # network input side, pixels
    crop_size: int  # side of the cached crop the network was trained on
    forehead: float  # crop convention (prepare.annotation_box)
    padding: float
    mean_shape: list  # (K, 2) mean training shape, crop pixels
    dataset: str  # what it was trained on
    normalization: dict = field(
        default_factory=lambda: {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    )
    box_calibration: dict | None = (
        None  # detector.BoxCalibration.to_dict(), None when no face was found
    )
    flip_test: bool = False  # the run evaluated with the flip test
    view: float = (
        1.0  # the network sees the centred square of this fraction of the crop (model.view)
    )
    correction: list | None = (
        None  # (K, 2) mean validation error per point, pixels of the crop at 256x256,
    )
    #                                 subtracted from every prediction (model.bias_correction)
    box: str = "landmarks"  # crop convention: the box before padding (prepare.annotation_box)
    head: str = "regression"  # the network's head (LandmarkRegressor)
    recrop: int = (
        0  # from a detector's box, cut the face out again from the points found, this many times
    )
    training: dict = field(
        default_factory=dict
    )  # recipe and provenance: loss, epochs, best epoch, params digest
    lmkit_version: str = ""

    # the params keys each fact answers to: a run that asks otherwise is refused
    PARAMS = {
        "input_size": "model.input_size",
        "crop_size": "data.crop_size",
        "forehead": "data.forehead",
        "padding": "data.padding",
        "box": "data.box",
        "head": "model.head",
    }
    # every params key check_settings reads
    SETTINGS = (
        *PARAMS.values(),
        "model.view",
        "train.crop_fraction",
        "train.scale",
        "model.bias_correction",
        "model.recrop",
    )

    def check_settings(self, settings: dict, source: str) -> None:
        """Refuse settings ({dotted params key: value}, e.g. ``params.flatten(params)``: the keys
        of ``PARAMS``, the view's and the bias correction's are read) that ask for another input size,
        crop, view or correction than the model was trained with."""
        wrong = []
        for attr, key in self.PARAMS.items():
            want, have = settings[key], getattr(self, attr)
            if (abs(want - have) > 1e-9) if isinstance(have, float) else want != have:
                wrong.append(f"{key} is {want!r} in the params but {have!r} in the model file")
        view = view_fraction(
            settings["model.view"], settings["train.crop_fraction"], settings["train.scale"]
        )
        if abs(view - self.view) > 1e-9:
            wrong.append(
                f"model.view is {settings['model.view']!r} in the params (the centre {view:.4g} of the crop) "
                f"but the model file sees the centre {self.view:.4g}"
            )
        if settings["model.bias_correction"] != (self.correction is not None):
            wrong.append(
                f"model.bias_correction is {settings['model.bias_correction']!r} in the params but the "
                f"model file has {'a' if self.correction is not None else 'no'} correction"
            )
        if settings["model.recrop"] != self.recrop:
            wrong.append(
                f"model.recrop is {settings['model.recrop']!r} in the params but {self.recrop!r} in the model file"
            )
        if wrong:
            raise ValueError(
                f"{source}: the params do not describe this model: {'; '.join(wrong)}. "
                "Evaluate with the params it was trained with, or train again."
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        """From a model file's or an ONNX copy's record; keys this lmkit does not know are left out."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
