"""The network outside lmkit: ``lmkit export`` (TorchScript or ONNX) and the ONNX copy that
``lmkit predict`` runs with onnxruntime instead of PyTorch (no torch import: about 2-3 s less per
command).

Both files hold ``CropNet``: uint8 RGB crops (B, S, S, 3) of the model's input size S in, points
(B, K, 2) in pixels of those crops out; the [0, 1] scaling, the model's view, the ImageNet
normalisation and the bias correction are inside. Their metadata says what the model file says
(``export_metadata``), so nothing else is needed to use them.

The ONNX copy ``lmkit predict`` runs is kept in a cache folder (``inference.onnx_copy``), named by
the SHA-1 of the model file and of this file's source: an edited model file or a changed export
gets a new copy, never a stale one.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from lmkit.study.model import load_model_file
from lmkit.study.modelinfo import REFERENCE_SIZE
from lmkit.study.modelinfo import ModelInfo

EXPORT_FORMATS = ("torchscript", "onnx")


class CropNet(torch.nn.Module):
    """The network for export: uint8 RGB crops (B, S, S, 3) at the model's input size in,
    points (B, K, 2) in pixels of those crops out; the [0, 1] scaling, the model's view (its
    centred part of the crop, resampled as ``predict`` does), the ImageNet normalisation and the
    bias correction are inside. (Resize your crop box to S x S first; the model file says S.)
    The flip test is not: it is two passes, averaged."""

    def __init__(self, model: torch.nn.Module, info: ModelInfo, resample: bool = False):
        """``resample``: take float crops (B, H, W, 3) in [0, 1] of any size instead and resample them
        to S x S as evaluation does (``augment.warp``): the copy ``lmkit predict`` runs, fed what
        ``augment.to_float`` gives, so that its points are the PyTorch model's."""
        super().__init__()
        self.resample = resample
        from lmkit.study.augment import pixel_normalizer, resize_warps

        self.model = model.float().eval()
        norm, s = info.normalization, info.input_size
        self.register_buffer(
            "mean", torch.tensor(norm["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        )
        self.register_buffer("std", torch.tensor(norm["std"], dtype=torch.float32).view(1, 3, 1, 1))
        self.view = info.view != 1.0
        m = resize_warps(1, s, s, view=info.view)[0]  # output pixels -> input pixels
        theta = (
            pixel_normalizer(s, torch.float64, "cpu")
            @ m
            @ torch.linalg.inv(pixel_normalizer(s, torch.float64, "cpu"))
        )
        grid = torch.nn.functional.affine_grid(
            theta[None, :2].float(), [1, 3, s, s], align_corners=False
        )
        self.register_buffer("grid", grid)
        # points: 256-frame network output -> input pixels of the view -> pixels of the crop, minus the correction
        self.register_buffer("linear", (m[:2, :2].T * (s / REFERENCE_SIZE)).float())
        shift = m[:2, 2].float()
        if info.correction is not None:
            shift = shift - torch.tensor(info.correction, dtype=torch.float32) * (
                s / REFERENCE_SIZE
            )
        self.register_buffer("shift", shift.expand(info.n_points, 2).clone())

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.permute(0, 3, 1, 2)
        x = x if self.resample else x.float() / 255.0
        if self.view or self.resample:
            x = torch.nn.functional.grid_sample(
                x,
                self.grid.expand(x.shape[0], -1, -1, -1),
                mode="bilinear",
                padding_mode="zeros",
                align_corners=False,
            )
        return self.model((x - self.mean) / self.std) @ self.linear + self.shift


def export(
    run_or_model: str | Path,
    fmt: str,
    out: str | Path,
    extra: dict | None = None,
    resample: bool = False,
) -> Path:
    """Write the network as TorchScript (``torch.jit.load``) or ONNX (onnxruntime), batch size
    free, atomically. ``extra``: more metadata (str values); ``resample``: ``CropNet``'s (ONNX only).
    Returns the file."""
    from lmkit.run.folder import atomic_write, model_file

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    model, info = load_model_file(model_file(run_or_model))
    net = CropNet(model.to(memory_format=torch.contiguous_format), info, resample).eval()
    example = torch.zeros(
        2, info.input_size, info.input_size, 3, dtype=torch.float32 if resample else torch.uint8
    )
    free = {0: "batch", 1: "height", 2: "width"} if resample else {0: "batch"}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    about = {**export_metadata(info), **(extra or {})}
    with torch.no_grad(), atomic_write(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # torch.jit is marked deprecated in torch >= 2.10; it still works
        if fmt == "torchscript":
            torch.jit.save(
                torch.jit.trace(net, example),
                str(tmp),
                _extra_files={"lmkit.json": json.dumps(about)},
            )
        else:
            try:
                import onnx
            except ImportError:
                raise ImportError(
                    "ONNX export needs the onnx package: pip install onnx onnxruntime"
                ) from None
            torch.onnx.export(
                net,
                (example,),
                str(tmp),
                input_names=["crops"],
                output_names=["points"],
                dynamic_axes={"crops": free, "points": {0: "batch"}},
                dynamo=False,
                opset_version=17,
            )
            graph = onnx.load(str(tmp))
            for key, value in about.items():
                graph.metadata_props.add(
                    key=key, value=value if isinstance(value, str) else json.dumps(value)
                )
            onnx.save(graph, str(tmp))
    return out


def export_metadata(info: ModelInfo) -> dict:
    """What an exported file says about itself (ONNX ``metadata_props``, TorchScript's extra
    file ``lmkit.json``): the scheme, the input, the crop convention and where the weights came
    from, and the whole model file's record (``model_info``, which ``Landmarker`` reads back)."""
    import lmkit

    return {
        "producer": f"lmkit {lmkit.__version__}",
        "scheme": info.scheme,
        "n_points": info.n_points,
        "input": f"uint8 RGB crops (batch, {info.input_size}, {info.input_size}, 3)",
        "output": f"points (batch, {info.n_points}, 2) in pixels of those crops",
        "input_size": info.input_size,
        "crop_size": info.crop_size,
        "crop_box": info.box,
        "forehead": info.forehead,
        "padding": info.padding,
        "view": info.view,
        "head": info.head,
        "bias_correction": info.correction is not None,
        "flip_test_in_model_file": info.flip_test,
        "recrop_in_model_file": info.recrop,
        "box_calibration": info.box_calibration,
        "dataset": info.dataset,
        "training": {k: v for k, v in info.training.items() if isinstance(v, (int, float, str))},
        "model_info": info.to_json(),
    }
