"""Classical peers on the same test faces: the ERT method of Kazemi and Sullivan (2014), dlib's
shape predictor, trained on the run's own training faces, any point count (``train_ert``,
``run_ert``); and dlib's 68-point model as shipped by ``face_recognition_models``.

Optional (``pip install -e '.[peers]'``): without dlib, ``peer_unavailable`` says why and
the report says the peer was not run. dlib runs on the original photo, either in the box of
its own HOG face detector or in the box of the annotations (the landmarks' bounding box),
and its points are mapped into the same crop frame as ours. A face the detector misses
counts as a failure (NME infinite) and is listed.

Note: dlib's shipped model was trained on 300-W, whose training part includes Helen's training
photos, the very photos of ``helen68``; its numbers there are optimistic. The ERT trained here
sees only the run's training faces, in the crops 01 prepared, each in its annotation box.
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


# ------------------------------------------------------------------ ERT trained on the run's own faces
ERT_UPSAMPLE = 2  # dlib's points are whole pixels: on crops at twice their size, half a crop pixel


def _ert_box(points: np.ndarray):
    """The annotation box (the box around a face's points), in dlib's inclusive integer pixels."""
    import dlib

    (x0, y0), (x1, y1) = np.floor(points.min(0)), np.ceil(points.max(0))
    return dlib.rectangle(int(x0), int(y0), int(x1), int(y1))


def _upsampled(crop: np.ndarray) -> np.ndarray:
    from PIL import Image

    s = crop.shape[0] * ERT_UPSAMPLE
    return np.asarray(Image.fromarray(np.asarray(crop)).resize((s, s), Image.BILINEAR))


def ert_options(trees: int, cascades: int, seed: int = 0):
    """dlib's shape-predictor trainer with its defaults (tree depth 4, oversampling 20, nu 0.1,
    as Kazemi and Sullivan's ERT), ``trees`` per cascade level and ``cascades`` levels."""
    import dlib

    o = dlib.shape_predictor_training_options()
    o.num_trees_per_cascade_level, o.cascade_depth = trees, cascades
    o.random_seed, o.num_threads = str(seed), 0
    return o


def ert_digest(crops, landmarks, trees: int, cascades: int, seed: int) -> str:
    """What an ERT's training depends on: its faces (crops and points) and its options."""
    import hashlib

    h = hashlib.sha1(f"{trees} {cascades} {seed} {ERT_UPSAMPLE} {len(crops)}".encode())
    for i in range(len(crops)):
        h.update(np.ascontiguousarray(crops[i]).tobytes())
    h.update(np.ascontiguousarray(landmarks, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def train_ert(
    crops, landmarks, folder: Path, trees: int = 500, cascades: int = 10, seed: int = 0, log=print
) -> dict:
    """dlib's ERT trained on a run's training faces (uint8 crops (N, S, S, 3), points (N, K, 2) in
    crop pixels), each in its annotation box; kept in ``folder`` by a digest of the faces and the
    options, and reused while they are unchanged (a new network does not train it again).
    Returns {"file", "minutes" (of the training that made it), "faces", "reused"}."""
    import json

    import dlib

    from lmkit.run.folder import atomic_write

    key = ert_digest(crops, landmarks, trees, cascades, seed)
    file, about = folder / f"ert-{key}.dat", folder / f"ert-{key}.json"
    if file.exists() and about.exists():
        return {**json.loads(about.read_text()), "file": file, "reused": True}
    log(
        f"ERT: training dlib's shape predictor on {len(crops)} faces ({trees} trees x {cascades} cascades)"
    )
    images, objects = [], []
    for crop, points in zip(crops, np.asarray(landmarks)):
        p = points * ERT_UPSAMPLE
        images.append(_upsampled(crop))
        objects.append(
            [
                dlib.full_object_detection(
                    _ert_box(p), [dlib.point(round(x - 0.5), round(y - 0.5)) for x, y in p]
                )
            ]
        )
    t0 = time.perf_counter()
    predictor = dlib.train_shape_predictor(images, objects, ert_options(trees, cascades, seed))
    minutes = (time.perf_counter() - t0) / 60
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(file) as tmp:
        predictor.save(str(tmp))
    with atomic_write(about) as tmp:
        tmp.write_text(
            json.dumps(
                {"minutes": minutes, "faces": len(crops), "trees": trees, "cascades": cascades}
            )
        )
    return {"file": file, "minutes": minutes, "faces": len(crops), "reused": False}


def run_ert(file: Path, crops, landmarks) -> dict:
    """A trained ERT on test crops, each in its annotation box (the box around its true points, as
    it trained). Returns ``pred`` (N, K, 2) in crop pixels and ``seconds_per_face``."""
    import dlib

    predictor = dlib.shape_predictor(str(file))
    pred, t0 = np.zeros(np.shape(landmarks)), time.perf_counter()
    for i, (crop, points) in enumerate(zip(crops, np.asarray(landmarks))):
        shape = predictor(_upsampled(crop), _ert_box(points * ERT_UPSAMPLE))
        # whole pixels of the upsampled crop: +0.5 to pixel-corner coordinates, then crop pixels
        pred[i] = np.array([[q.x + 0.5, q.y + 0.5] for q in shape.parts()]) / ERT_UPSAMPLE
    return {"pred": pred, "seconds_per_face": (time.perf_counter() - t0) / max(1, len(pred))}
