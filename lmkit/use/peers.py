"""A real peer on the same test faces: dlib's 68-point shape predictor (the ERT method of
Kazemi and Sullivan, 2014), as shipped by ``face_recognition_models``.

Optional (``pip install -e '.[peers]'``): without dlib, ``peer_unavailable`` says why and
the report says the peer was not run. dlib runs on the original photo, either in the box of
its own HOG face detector or in the box of the annotations (the landmarks' bounding box),
and its points are mapped into the same crop frame as ours. A face the detector misses
counts as a failure (NME infinite) and is listed.

Note: dlib's model was trained on 300-W, whose training part includes Helen's training
photos, the very photos of ``helen68``; its numbers there are optimistic.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from lmkit.use.detector import best_match
from lmkit.data.prepare import crop_to_photo
from lmkit.data.readers import load_image


def dlib_model_file() -> Path | None:
    spec = importlib.util.find_spec(
        "face_recognition_models"
    )  # its __init__ needs pkg_resources: don't import
    if spec is None or not spec.submodule_search_locations:
        return None
    f = (
        Path(spec.submodule_search_locations[0])
        / "models"
        / "shape_predictor_68_face_landmarks.dat"
    )
    return f if f.exists() else None


def peer_unavailable(n_points: int) -> str | None:
    """Why dlib cannot run here, or None when it can."""
    if n_points != 68:
        return f"dlib's predictor has 68 points; this data set has {n_points}"
    if importlib.util.find_spec("dlib") is None:
        return "dlib is not installed (pip install -e '.[peers]')"
    if dlib_model_file() is None:
        return "face_recognition_models (dlib's 68-point model file) is not installed"
    return None


class DlibPeer:
    def __init__(self):
        import dlib

        from lmkit.use.detector import HogDetector

        self._dlib = dlib
        self.detector = HogDetector()  # the same detector lmkit predict uses
        self.predictor = dlib.shape_predictor(str(dlib_model_file()))

    def predict(self, image: np.ndarray, box) -> np.ndarray:
        """68 points (pixel-corner coordinates) in ``box`` = (x0, y0, x1, y1)."""
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self.predictor(image, rect)
        # dlib's integer points are pixel indices: +0.5 moves them to pixel-corner coordinates
        return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], dtype=np.float64)

    def detect(self, image: np.ndarray, near) -> tuple | None:
        """The HOG detection overlapping the annotated face most (upsampled once), or None."""
        # back to dlib's inclusive rectangles, as this peer has always been run
        boxes = [(x0, y0, x1 - 1, y1 - 1) for x0, y0, x1, y1 in self.detector(image)]
        return best_match(boxes, near)


def run_dlib(
    sources: list[str], crop_boxes: np.ndarray, true_crop: np.ndarray, crop_size: int
) -> dict:
    """dlib on each test face's original photo, with both boxes; predictions mapped into the
    crop frame. Returns {"hog": ..., "annotation": ...}, each with ``pred`` (N, 68, 2; NaN
    where no face was detected), ``seconds`` per face and ``missed`` names' indices."""
    peer = DlibPeer()
    out = {
        k: {"pred": np.full(true_crop.shape, np.nan), "seconds": [], "missed": []}
        for k in ("hog", "annotation")
    }
    for i, (src, box) in enumerate(zip(sources, crop_boxes)):
        image = load_image(Path(src))
        to_photo = crop_to_photo(box, crop_size)
        true_full = to_photo(true_crop[i])
        ann_box = (*true_full.min(0), *true_full.max(0))
        for kind in ("hog", "annotation"):
            t0 = time.perf_counter()
            face = ann_box if kind == "annotation" else peer.detect(image, ann_box)
            if face is None:
                out[kind]["missed"].append(i)
            else:
                out[kind]["pred"][i] = to_photo.inverse(peer.predict(image, face))
            out[kind]["seconds"].append(time.perf_counter() - t0)
    for v in out.values():
        v["seconds_per_face"] = float(np.mean(v["seconds"]))
    return out
