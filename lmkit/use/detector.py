"""Finding faces in a photo, and turning a face detector's box into lmkit's crop box.

The network was trained on crops drawn from the *annotations* (``prepare.crop_box``: the
landmark box, a third more upward for the forehead, 5% padding). A face detector gives a
different box. ``BoxCalibration`` is the mapping between the two, learned per run from the
training photos: each training face the detector finds gives its crop box in units of the
detector's box (0 and 1 are the box's edges), and the calibration is the median of those.

Boxes are (x0, y0, x1, y1) in pixels of the photo, origin at the top-left pixel corner,
the same convention as the landmarks.

The default detector is dlib's HOG frontal-face detector (``dlib.get_frontal_face_detector``),
which needs no model file and runs offline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np

from lmkit.run.params import DETECTORS as CHOICES
from lmkit.data.prepare import annotation_box

HOG_NAME = "dlib HOG frontal face detector"
# model.detector's choices (named once, in the params schema): HogDetector's settings (each detector's
# name says them; a model file's box calibration records the name, and the detector is found again by it)
DETECTORS = {"hog": {}, "hog-coarse": {"coarse_side": 240}}
assert tuple(DETECTORS) == CHOICES, (
    "lmkit.run.params.DETECTORS and these settings name the same detectors"
)


def iou(a, b) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def best_match(boxes, target, min_iou: float = 0.2):
    """The box overlapping ``target`` most, or None when none overlaps it by ``min_iou``."""
    if not len(boxes):
        return None
    best = max(boxes, key=lambda b: iou(b, target))
    return best if iou(best, target) > min_iou else None


def make_detector(key: str) -> "HogDetector":
    """The detector of a ``model.detector`` value."""
    if key not in DETECTORS:
        raise ValueError(f"model.detector: must be one of {', '.join(DETECTORS)}, got {key!r}")
    return HogDetector(**DETECTORS[key])


def detector_named(name: str) -> "HogDetector":
    """The detector a box calibration was fitted for, by the name it recorded."""
    for key, settings in DETECTORS.items():
        if hog_name(**settings) == name:
            return make_detector(key)
    raise ValueError(
        f"the model file's box calibration was fitted for {name!r}, a face detector this lmkit does not "
        f"know (it knows {', '.join(hog_name(**s) for s in DETECTORS.values())}): give the detector "
        "yourself (Landmarker.load(..., detector=...)) or face boxes (lmkit predict --boxes)"
    )


def hog_name(upsample: int = 1, max_side: int = 1200, coarse_side: int | None = None) -> str:
    """A HogDetector's name: the default settings keep the plain name that earlier model files record."""
    extra = ([f"upsampled {upsample}x"] if upsample != 1 else []) + (
        [f"at most {max_side} px"] if max_side != 1200 else []
    )
    extra += [f"coarse first at {coarse_side} px"] if coarse_side else []
    return HOG_NAME + (f" ({', '.join(extra)})" if extra else "")


class HogDetector:
    """dlib's HOG frontal-face detector. Photos are upsampled once (``upsample``) so faces
    down to about 40 pixels are found; photos larger than ``max_side`` are searched at a
    reduced size (the boxes are scaled back), which keeps the time per photo bounded.

    ``coarse_side``: first search the photo shrunk to this longest side without upsampling (faces
    from about 80/``coarse_side`` of the photo's side up), and only when no face is found there, the
    full search: several times faster on photos of one large face, the same faces on the rest."""

    def __init__(self, upsample: int = 1, max_side: int = 1200, coarse_side: int | None = None):
        try:
            import dlib
        except ImportError:
            raise RuntimeError(
                "the face detector needs dlib: pip install dlib-bin (installed by `make setup`)"
            ) from None
        self.upsample, self.max_side, self.coarse_side = upsample, max_side, coarse_side
        self.name = hog_name(upsample, max_side, coarse_side)
        self._detector = dlib.get_frontal_face_detector()

    def __repr__(self) -> str:
        return f"HogDetector({self.name})"

    def __call__(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Face boxes in ``image`` (H, W, 3) uint8 RGB, most confident first."""
        if self.coarse_side:
            found = self._search(image, self.coarse_side, 0)
            if found:
                return found
        return self._search(image, self.max_side, self.upsample)

    def _search(
        self, image: np.ndarray, side: int, upsample: int
    ) -> list[tuple[float, float, float, float]]:
        scale = 1.0
        if max(image.shape[:2]) > side:
            from PIL import Image

            scale = side / max(image.shape[:2])
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        rects, scores, _ = self._detector.run(np.ascontiguousarray(image), upsample, 0.0)
        order = np.argsort(scores)[::-1]
        # dlib's rectangles hold inclusive pixel indices: right + 1 is the box's right edge
        return [
            tuple(
                float(v) / scale
                for v in (
                    rects[i].left(),
                    rects[i].top(),
                    rects[i].right() + 1,
                    rects[i].bottom() + 1,
                )
            )
            for i in order
        ]


@dataclass(frozen=True)
class BoxCalibration:
    """The crop box in units of the detector's box: x0 = det_x0 + box[0] * det_width, etc."""

    detector: str
    box: tuple[float, float, float, float]
    faces: int  # training faces it was fitted on
    photos: int  # training photos searched
    spread: tuple[
        float, float, float, float
    ]  # median absolute deviation of each edge, in detector-box units

    @classmethod
    def fit(
        cls, detector_boxes: np.ndarray, crop_boxes: np.ndarray, detector: str, photos: int
    ) -> "BoxCalibration":
        """Fit on pairs of a detector's box and the annotation crop box of the same face."""
        det, crop = (
            np.asarray(detector_boxes, np.float64).reshape(-1, 4),
            np.asarray(crop_boxes, np.float64).reshape(-1, 4),
        )
        if len(det) == 0:
            raise ValueError(
                f"no training face was found by the {detector}: the box calibration cannot be fitted"
            )
        units = to_units(crop, det)
        median = np.median(units, axis=0)
        spread = np.median(np.abs(units - median), axis=0)
        return cls(
            detector,
            tuple(float(v) for v in median),
            len(det),
            photos,
            tuple(float(v) for v in spread),
        )

    def crop_boxes(self, detector_boxes) -> np.ndarray:
        """The crop boxes (N, 4) for detector boxes (N, 4), not yet clipped to the photo."""
        det = np.asarray(detector_boxes, np.float64).reshape(-1, 4)
        w, h = det[:, 2] - det[:, 0], det[:, 3] - det[:, 1]
        u = np.asarray(self.box)
        return np.stack(
            [
                det[:, 0] + u[0] * w,
                det[:, 1] + u[1] * h,
                det[:, 0] + u[2] * w,
                det[:, 1] + u[3] * h,
            ],
            1,
        )

    def crop_sigma(self) -> tuple[float, float, float, float]:
        """How far each edge of a calibrated crop strays from the annotation crop's edge: a
        robust standard deviation (1.4826 x the median absolute deviation) in units of the
        crop's side (left, top, right, bottom). The values for ``train.edges``."""
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return tuple(float(1.4826 * s / side) for s, side in zip(self.spread, (w, h, w, h)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BoxCalibration":
        return cls(
            d["detector"], tuple(d["box"]), int(d["faces"]), int(d["photos"]), tuple(d["spread"])
        )


def to_units(boxes: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """``boxes`` (N, 4) in units of ``frames`` (N, 4): each frame's edges become 0 and 1."""
    w, h = frames[:, 2] - frames[:, 0], frames[:, 3] - frames[:, 1]
    if np.any(w <= 0) or np.any(h <= 0):
        raise ValueError("detector boxes must have a positive width and height")
    return np.stack(
        [
            (boxes[:, 0] - frames[:, 0]) / w,
            (boxes[:, 1] - frames[:, 1]) / h,
            (boxes[:, 2] - frames[:, 0]) / w,
            (boxes[:, 3] - frames[:, 1]) / h,
        ],
        1,
    )


def calibrate(
    detector: Callable,
    faces: Iterable[tuple[np.ndarray, np.ndarray]],
    forehead: float,
    padding: float,
    min_iou: float = 0.3,
    box: str = "landmarks",
) -> BoxCalibration:
    """Fit the calibration on (photo, landmarks in photo pixels) pairs: on each photo the
    detection overlapping the landmarks' box most (IoU above ``min_iou``) is paired with the
    face's annotation crop box (``prepare.annotation_box``, not clipped)."""
    det, crop, photos = [], [], 0
    for image, landmarks in faces:
        photos += 1
        found = best_match(detector(image), (*landmarks.min(0), *landmarks.max(0)), min_iou)
        if found is not None:
            det.append(found)
            crop.append(annotation_box(landmarks, forehead, padding, box))
    return BoxCalibration.fit(
        np.asarray(det),
        np.asarray(crop),
        getattr(detector, "name", type(detector).__name__),
        photos,
    )
