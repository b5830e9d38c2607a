"""Landmarks on a photo with an exported ONNX file alone: onnxruntime, numpy and pillow, no lmkit.

    lmkit export reports/helen68-best-cpu --format onnx --out landmarks.onnx
    python examples/onnx_landmarks.py landmarks.onnx photo.jpg --box 120 80 320 300

``--box`` is a face detector's box (x0 y0 x1 y1, photo pixels), such as dlib's HOG frontal-face
detector gives; the file's box calibration turns it into the crop the network was trained on.
With ``--box-kind crop`` the box is that crop already (lmkit's convention). Prints one line per
point: ``index x y`` in photo pixels. Everything used is in the file's metadata:

- ``box_calibration.box``: the crop box in units of the detector's box (left, top, right, bottom);
- ``input_size`` S: the crop box, whatever its shape, is resized to S x S (a non-square box is
  stretched, as in training);
- the network's output: points in pixels of that S x S crop; back to the photo by the same map.

What lmkit adds on top (not here): the flip test (a second pass on the mirrored crop, its points
renumbered by the scheme's mirror map) and re-crops (cutting the face out again from the points
found, by the training crop convention), which the file's metadata records as the model file's
choices (``flip_test_in_model_file``, ``recrop_in_model_file``).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime
from PIL import Image


def crop_box(box, kind: str, meta: dict) -> tuple[float, float, float, float]:
    """The crop box in photo pixels for a face box of ``kind`` ("detector" or "crop")."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if kind == "crop":
        return x0, y0, x1, y1
    calibration = json.loads(meta["box_calibration"])
    if not calibration:
        raise SystemExit(
            "this file has no box calibration (trained on synthetic faces): give --box-kind crop"
        )
    u0, v0, u1, v1 = calibration["box"]
    w, h = x1 - x0, y1 - y0
    return x0 + u0 * w, y0 + v0 * h, x0 + u1 * w, y0 + v1 * h


def landmarks(
    session: onnxruntime.InferenceSession, photo: Image.Image, box, kind: str = "detector"
) -> np.ndarray:
    """(K, 2) points in photo pixels for one face."""
    meta = session.get_modelmeta().custom_metadata_map
    size = int(meta["input_size"])
    x0, y0, x1, y1 = crop_box(box, kind, meta)
    x0, y0, x1, y1 = (
        max(0.0, x0),
        max(0.0, y0),
        min(float(photo.width), x1),
        min(float(photo.height), y1),
    )  # as trained
    crop = np.asarray(
        photo.convert("RGB").resize((size, size), Image.BILINEAR, box=(x0, y0, x1, y1))
    )
    points = session.run(None, {"crops": crop[None]})[0][0].astype(
        np.float64
    )  # (K, 2), crop pixels
    return points * [(x1 - x0) / size, (y1 - y0) / size] + [x0, y0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx", help="a file written by lmkit export --format onnx")
    parser.add_argument("photo")
    parser.add_argument(
        "--box", nargs=4, type=float, required=True, metavar=("X0", "Y0", "X1", "Y1")
    )
    parser.add_argument("--box-kind", choices=("detector", "crop"), default="detector")
    args = parser.parse_args()
    session = onnxruntime.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    for i, (x, y) in enumerate(landmarks(session, Image.open(args.photo), args.box, args.box_kind)):
        print(f"{i} {x:.2f} {y:.2f}")


if __name__ == "__main__":
    main()
