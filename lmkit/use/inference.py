"""A trained run as a landmark detector for any photo, in the spirit of face-alignment's
``FaceAlignment(...).get_landmarks(img)`` and dlib's ``predictor(img, detector(img)[0])``:

    from lmkit.use.inference import Landmarker
    lm = Landmarker.load("reports/helen68-best-cpu")      # a run folder or its train/model.pt
    for face in lm.detect("photo.jpg"):                    # path, PIL image or numpy array
        face.box, face.points                              # (x0, y0, x1, y1); (K, 2) photo pixels
    lm.predict(image, boxes)                               # for face boxes you already have

Each face is cut out of the photo as in training (the crop box resized to the model's crop
size), the network predicts in the crop, and the points are mapped back to the photo. The
face detector's box is turned into a crop box by the run's box calibration
(``lmkit.use.detector``). Everything about the model (scheme, input size, crop convention,
calibration) comes from the model file, never from params.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lmkit.use.detector import BoxCalibration, HogDetector, detector_named
from lmkit.study.modelinfo import REFERENCE_SIZE, ModelInfo
from lmkit.data.prepare import clip_box, crop_box, crop_image, crop_to_photo
from lmkit.run.folder import model_file  # noqa: F401  (a run folder's model file, or the file itself)
from lmkit.study.schemes import SCHEMES, Scheme, check_mirror


@dataclass
class Face:
    """One face in a photo: the detector's box (None when the caller gave a crop box), the
    crop box the network saw, and the points (K, 2) in pixels of the photo."""

    box: tuple[float, float, float, float] | None
    crop_box: tuple[float, float, float, float]
    points: np.ndarray


def as_rgb(image) -> np.ndarray:
    """A path, a PIL image or a numpy array (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA,
    uint8, as (H, W, 3) uint8 RGB."""
    from PIL import Image

    from lmkit.data.readers import load_image

    if isinstance(image, (str, Path)):
        return load_image(Path(image))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"image array must be uint8, got {a.dtype}")
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return np.ascontiguousarray(a[..., :3])
    raise ValueError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")


BACKENDS = ("auto", "onnx", "torch")


class TorchNetwork:
    """The model file's network in PyTorch (``model.predict``: the evaluation's own path)."""

    name = "PyTorch"

    def __init__(self, model, info: ModelInfo, device="auto", batch_size: int = 32):
        import torch

        from lmkit.study.model import pick_device

        self.device = pick_device(device) if isinstance(device, str) else torch.device(device)
        self.model, self.info, self.batch_size = model.to(self.device).eval(), info, batch_size
        self.crop_size = info.crop_size  # crops are cut at the size the network was trained on

    def __call__(self, crops: np.ndarray, mirror: tuple[int, ...] | None) -> np.ndarray:
        """Points (N, K, 2) in pixels of the uint8 crops (N, S, S, 3); ``mirror``: the flip test's map."""
        from lmkit.study.model import predict

        return predict(
            self.model,
            crops,
            self.info.input_size,
            self.batch_size,
            self.device,
            flip_mirror=mirror,
            view=self.info.view,
            correction=self.info.correction,
        )


class OnnxNetwork:
    """The same network in ONNX Runtime on the CPU, from the model file's cached ONNX copy
    (``onnx_copy``): no PyTorch import, and faster per face on a CPU. The crops are cut and shrunk
    exactly as for PyTorch (``augment.to_float``'s area averaging, here in NumPy); resampling to the
    input size, the view, the normalisation and the bias correction are in the copy. Its points
    agree with ``TorchNetwork``'s to float rounding (tests/test_inference.py)."""

    name = "ONNX Runtime"

    def __init__(self, path: str | Path, batch_size: int = 32):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # its warnings about unused initialisers are not the user's
        # no busy-waiting between runs: the face detector and the crops run on the same cores in between
        # (with it, 20.8 ms per face with the flip test instead of 12.5, on a 2-core host)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path, self.batch_size = Path(path), batch_size
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        if "model_info" not in meta:
            raise ValueError(
                f"{path}: its metadata has no model_info (written by an older lmkit?): export it again"
            )
        self.info = ModelInfo.from_dict(json.loads(meta["model_info"]))
        if self.session.get_inputs()[0].type != "tensor(float)":
            raise ValueError(
                f"{path}: takes uint8 crops (a file from lmkit export); lmkit predict reads run folders, "
                "model files and its own ONNX copies"
            )
        self.crop_size = self.info.crop_size
        s = self.info.input_size
        self._shrink = (
            _area_matrix(self.crop_size, math.ceil(1.5 * s)) if self.crop_size > 1.5 * s else None
        )
        self.device = "cpu"

    def __call__(self, crops: np.ndarray, mirror: tuple[int, ...] | None) -> np.ndarray:
        x = crops.astype(np.float32) / np.float32(255)
        if self._shrink is not None:  # augment.to_float: area averaging to ceil(1.5 S)
            x = np.einsum("oi,bijc,pj->bopc", self._shrink, x, self._shrink, optimize=True).astype(
                np.float32
            )
        n = len(x)
        if mirror is not None:
            x = np.concatenate([x, x[:, :, ::-1]])
        x = np.ascontiguousarray(x)
        out = np.concatenate(
            [
                self.session.run(None, {"crops": x[i : i + self.batch_size]})[0]
                for i in range(0, len(x), self.batch_size)
            ]
        ).astype(np.float64)
        s = self.info.input_size  # the copy's points are in pixels of the crop at S x S
        if (
            mirror is not None
        ):  # model.predict's flip test: average before the correction is taken off
            c = (
                np.asarray(self.info.correction) * (s / REFERENCE_SIZE)
                if self.info.correction is not None
                else 0.0
            )
            straight, flipped = out[:n] + c, (out[n:] + c)[:, list(mirror)]
            flipped[..., 0] = s - flipped[..., 0]
            out = (straight + flipped) / 2 - c
        return out * (crops.shape[1] / s)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) averaging weights of adaptive average pooling (``F.interpolate(mode="area")``)."""
    m = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def cache_dir() -> Path:
    """Where ONNX copies of model files are kept: ``$LMKIT_CACHE``, else ``$XDG_CACHE_HOME/lmkit``,
    else ``~/.cache/lmkit``."""
    if os.environ.get("LMKIT_CACHE"):
        return Path(os.environ["LMKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lmkit"


def onnx_copy(model_path: str | Path, log=None) -> Path:
    """The model file's ONNX copy for ``OnnxNetwork``, named by the SHA-1 of the model file and of the
    export's source (an edited model file or export code gets a new copy, never a stale one);
    written on first use (a few seconds, with PyTorch)."""
    from lmkit.run.digests import file_sha1

    code = hashlib.sha1((Path(__file__).parent / "export.py").read_bytes()).hexdigest()[:8]
    out = cache_dir() / f"{file_sha1(Path(model_path))[:16]}-{code}.onnx"
    if not out.exists():
        from lmkit.use.export import export

        if log:
            log(
                f"first use of {model_path}: writing its ONNX copy to {out} (once; later runs start faster)"
            )
        export(
            model_path,
            "onnx",
            out,
            extra={"copy_of": str(Path(model_path).resolve())},
            resample=True,
        )
    return out


def onnx_runtime_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


class Landmarker:
    """A trained model with everything needed to find landmarks on photos."""

    def __init__(
        self,
        model,
        info: ModelInfo,
        device="auto",
        detector: Callable | None = None,
        flip_test: bool | None = None,
        batch_size: int = 32,
        recrop: int | None = None,
    ):
        """``model``: the PyTorch network, or a network object (``TorchNetwork``, ``OnnxNetwork``)."""
        self.network = (
            model
            if isinstance(model, (TorchNetwork, OnnxNetwork))
            else TorchNetwork(model, info, device, batch_size)
        )
        self.info, self.device = info, self.network.device
        self.scheme: Scheme = SCHEMES[info.scheme]
        self.flip_test = info.flip_test if flip_test is None else flip_test
        self.recrop = info.recrop if recrop is None else int(recrop)
        if self.recrop < 0:
            raise ValueError(f"recrop must be 0 or more, got {self.recrop}")
        if self.flip_test:
            check_mirror(self.scheme, np.asarray(info.mean_shape), info.crop_size)
        self.calibration = (
            BoxCalibration.from_dict(info.box_calibration) if info.box_calibration else None
        )
        self._detector, self.batch_size = detector, batch_size

    def __repr__(self) -> str:
        t = self.info.training
        recipe = ", ".join(
            f"{k} {t[k]}" for k in ("loss", "optimizer", "schedule", "epochs") if k in t
        )
        return (
            f"Landmarker({self.info.scheme} scheme, {self.info.n_points} points, {self.info.input_size}x"
            f"{self.info.input_size} input, {self.info.head} head; recipe: {recipe or 'not recorded'}; flip test "
            f"{'on' if self.flip_test else 'off'}, {self.recrop} re-crops, bias correction "
            f"{'on' if self.info.correction is not None else 'off'}, box calibration "
            f"{'fitted' if self.calibration else 'none'}; trained on {self.info.dataset}; "
            f"{self.network.name} on {self.device})"
        )

    @classmethod
    def load(
        cls,
        run_or_model: str | Path,
        device="auto",
        detector: Callable | None = None,
        flip_test: bool | None = None,
        batch_size: int = 32,
        recrop: int | None = None,
        backend: str = "auto",
        log=None,
    ) -> "Landmarker":
        """From a run folder or a model file. ``detector``: a callable image -> boxes
        (default: the one the box calibration was fitted for, ``model.detector``). ``flip_test``
        and ``recrop``: None takes the model file's. ``backend``: ``onnx`` runs the network in ONNX
        Runtime on the CPU from the model file's cached copy (``onnx_copy``), ``torch`` in PyTorch on
        ``device``; ``auto``: ONNX Runtime when it is installed and no GPU is asked for (``device``
        ``cuda``), else PyTorch. ``log``: told when an ONNX copy is written."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        path = model_file(run_or_model)
        chosen = backend
        if backend == "auto":
            chosen = (
                "onnx"
                if onnx_runtime_available() and not str(device).startswith("cuda")
                else "torch"
            )
        if chosen == "onnx":
            if str(device).startswith("cuda"):
                raise ValueError("backend onnx runs on the CPU: use backend torch for device cuda")
            try:
                copy = path if path.suffix == ".onnx" else onnx_copy(path, log)
            except (
                OSError
            ) as e:  # a cache folder it cannot write: auto goes on in PyTorch, onnx says why
                if backend == "onnx":
                    raise
                (log or (lambda _: None))(f"no ONNX copy ({e}); the network runs in PyTorch")
            else:
                network = OnnxNetwork(copy, batch_size)
                return cls(
                    network,
                    network.info,
                    detector=detector,
                    flip_test=flip_test,
                    batch_size=batch_size,
                    recrop=recrop,
                )
        if path.suffix == ".onnx":
            raise ValueError(f"{path}: an ONNX copy runs with backend onnx, not torch")
        from lmkit.study.model import load_model_file

        model, info = load_model_file(path)
        return cls(model, info, device, detector, flip_test, batch_size, recrop)

    @property
    def detector(self) -> Callable:
        """The face detector given, else the one the box calibration was fitted for (``model.detector``)."""
        if self._detector is None:
            self._detector = (
                detector_named(self.calibration.detector) if self.calibration else HogDetector()
            )
        return self._detector

    def find_faces(self, image) -> list[tuple[float, float, float, float]]:
        """The detector's face boxes in the photo (possibly none)."""
        return list(self.detector(as_rgb(image)))

    def detect(self, image) -> list[Face]:
        """Every face the detector finds, with its points; an empty list when it finds none."""
        self._need_calibration()
        rgb = as_rgb(image)
        boxes = self.detector(rgb)
        return self.predict(rgb, boxes) if len(boxes) else []

    def predict(self, image, boxes: Sequence, box: str = "detector") -> list[Face]:
        """Points for faces whose boxes the caller has. ``box="detector"``: face detector boxes,
        turned into crop boxes by the calibration, then re-cropped ``recrop`` times from the
        points found; ``box="crop"``: crop boxes in lmkit's convention (``prepare.annotation_box``),
        used as they are."""
        return self.predict_many([(image, boxes)], box)[0]

    def predict_many(
        self, items: Sequence[tuple[object, Sequence]], box: str = "detector"
    ) -> list[list[Face]]:
        """``predict`` for many (image, boxes) pairs, all faces in batches of ``batch_size``.

        From a detector's box the model sees a face framed only roughly (the calibration is right
        on average, not per face). With ``recrop`` (the model file's ``model.recrop``) the face is
        cut out again from the points just found, by the crop convention the model was trained on
        (``prepare.crop_box``: the box an annotation would give), and predicted again, as many
        times: the model then sees the face framed as in training."""
        if box not in ("detector", "crop"):
            raise ValueError(f"box must be 'detector' or 'crop', got {box!r}")
        if box == "detector":
            self._need_calibration()
        rgbs, faces = [], []  # faces: (item, the caller's box or None, crop box)
        for n, (image, boxes) in enumerate(items):
            rgbs.append(as_rgb(image))
            given = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            crop_boxes = self.calibration.crop_boxes(given) if box == "detector" else given
            for g, c in zip(given, crop_boxes):
                faces.append(
                    (
                        n,
                        tuple(float(v) for v in g) if box == "detector" else None,
                        clip_box(c, rgbs[n].shape[:2]),
                    )
                )
        out: list[list[Face]] = [[] for _ in items]
        if not faces:
            return out
        points = self._points(rgbs, faces)
        for _ in range(self.recrop if box == "detector" else 0):
            faces = [
                (
                    n,
                    det,
                    crop_box(
                        p, rgbs[n].shape[:2], self.info.forehead, self.info.padding, self.info.box
                    ),
                )
                for (n, det, _), p in zip(faces, points)
            ]
            points = self._points(rgbs, faces)
        for (n, det_box, c), p in zip(faces, points):
            out[n].append(Face(det_box, c, p))
        return out

    def _points(self, rgbs: list[np.ndarray], faces: list[tuple]) -> list[np.ndarray]:
        """Each face's points (K, 2) in photo pixels, cut out of its photo by its crop box."""
        size = self.info.crop_size
        crops = np.stack([crop_image(rgbs[n], c, size) for n, _, c in faces])
        return [crop_to_photo(c, size)(p) for (_, _, c), p in zip(faces, self.predict_crops(crops))]

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """Points (N, K, 2) in crop pixels for uint8 crops (N, S, S, 3) of the model's crop size."""
        if crops.ndim != 4 or crops.shape[1:] != (self.info.crop_size, self.info.crop_size, 3):
            raise ValueError(
                f"crops must be (N, {self.info.crop_size}, {self.info.crop_size}, 3), got {crops.shape}"
            )
        return self.network(crops, self.scheme.mirror if self.flip_test else None)

    def _need_calibration(self) -> None:
        if self.calibration is None:
            raise ValueError(
                "this model file has no box calibration (its face detector found no training face, "
                "e.g. on synthetic faces): give crop boxes with predict(image, boxes, box='crop')"
            )


# ------------------------------------------------------------------ lmkit predict
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def collect_photos(
    inputs: Sequence[str | Path],
) -> tuple[list[Path], list[tuple[str, str]], list[Path]]:
    """Photos named on the command line or found below folders (any depth, sorted).
    Returns (photos, refused as (path, reason), files ignored in folders for their suffix)."""
    photos, refused, ignored = [], [], []
    for item in map(Path, inputs):
        if item.is_dir():
            for f in sorted(p for p in item.rglob("*") if p.is_file()):
                (photos if f.suffix.lower() in PHOTO_SUFFIXES else ignored).append(f)
        elif item.is_file():
            photos.append(item)
        else:
            refused.append((str(item), "no such file or folder"))
    return photos, refused, ignored


BOX_COLUMNS = ("photo", "x0", "y0", "x1", "y1")


def read_boxes(path: str | Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """``lmkit predict --boxes``: a CSV with the columns photo, x0, y0, x1, y1 (one row per
    face, photo pixels; ``photo`` is the file's name or path as given). Returns {photo name: boxes};
    a missing column or a box that is not four numbers with x0 < x1 and y0 < y1 is an error naming
    the file and the row."""
    import csv

    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in BOX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; want {', '.join(BOX_COLUMNS)}"
            )
        out: dict[str, list] = {}
        for i, row in enumerate(reader):
            try:
                box = tuple(float(row[c]) for c in BOX_COLUMNS[1:])
            except (TypeError, ValueError):
                raise ValueError(f"{path}: row {i + 2}: the box is not four numbers") from None
            if not (np.isfinite(box).all() and box[0] < box[2] and box[1] < box[3]):
                raise ValueError(f"{path}: row {i + 2}: box {box} needs x0 < x1 and y0 < y1")
            out.setdefault(Path(row["photo"]).name, []).append(box)
    return out


def _write_csv(rows: list, columns: Sequence[str], path: Path) -> None:
    import csv

    from lmkit.run.folder import atomic_write

    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def predict_files(
    landmarker: Landmarker,
    inputs: Sequence[str | Path],
    out_dir: str | Path | None,
    log=print,
    progress: bool = True,
    boxes: dict | None = None,
    box: str = "detector",
    stdout=None,
) -> dict:
    """``lmkit predict``: for every photo, ``<stem>.pts`` (300-W format; more faces as
    ``<stem>_2.pts``, ...), ``<stem>.png`` (the photo with boxes and points); for all,
    ``points.csv`` and ``failures.csv``. A bad photo is listed with its reason and the batch
    goes on. Every file is written to a temporary name and renamed. With ``boxes`` ({photo
    file name: boxes}, ``read_boxes``) the faces are those boxes, of kind ``box`` ("crop": lmkit's
    crop convention; "detector": face detector boxes, through the model's calibration), and no
    face detector runs.

    Without ``out_dir`` the points go to ``stdout`` as CSV (``points.csv``'s columns) and, for more
    than one photo, each photo's ``.pts`` and ``<stem>.landmarks.png`` are written next to it."""
    import sys
    from collections import Counter

    from tqdm.auto import tqdm

    from lmkit.use.drawing import annotated_photo
    from lmkit.data.readers import write_pts
    from lmkit.run.folder import atomic_write

    photos, failures, ignored = collect_photos(inputs)
    beside = out_dir is None
    if not beside:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    files = (
        not beside or len(photos) + len(failures) > 1
    )  # one photo without --out: standard output only
    total = len(photos) + len(failures)
    stems: dict[str, Path] = {}
    rows, done, faces_total = [], 0, 0
    for photo in tqdm(photos, desc="photos", unit="photo", disable=not progress):
        stem = photo.stem if not beside else str(photo.with_suffix(""))
        if stem in stems:
            failures.append(
                (
                    str(photo),
                    f"same name as {stems[stem]}: its outputs would overwrite that photo's",
                )
            )
            continue
        if boxes is not None and photo.name not in boxes:
            failures.append((str(photo), "no box for it in the --boxes file"))
            continue
        try:
            image = as_rgb(photo)
            faces = (
                landmarker.detect(image)
                if boxes is None
                else landmarker.predict(image, boxes[photo.name], box=box)
            )
        except (OSError, ValueError) as e:
            failures.append((str(photo), str(e).replace(f"{photo}: ", "")))
            continue
        if not faces:
            failures.append(
                (
                    str(photo),
                    f"no face found by the {getattr(landmarker.detector, 'name', 'detector')} "
                    "(give the face's box with --boxes FILE.csv: columns photo,x0,y0,x1,y1)",
                )
            )
            continue
        stems[stem] = photo
        folder, base = (photo.parent, photo.stem) if beside else (out_dir, stem)
        for k, face in enumerate(faces, start=1):
            if files:
                write_pts(face.points, folder / f"{base if k == 1 else f'{base}_{k}'}.pts")
            shown = face.box if face.box is not None else face.crop_box
            rows += [
                (str(photo), k, j, float(x), float(y), *shown)
                for j, (x, y) in enumerate(face.points)
            ]
        if files:
            with atomic_write(folder / f"{base}{'.landmarks' if beside else ''}.png") as tmp:
                annotated_photo(image, faces, landmarker.scheme).save(tmp, format="PNG")
        done, faces_total = done + 1, faces_total + len(faces)
    columns = ["photo", "face", "point", "x", "y", "box_x0", "box_y0", "box_x1", "box_y1"]
    if beside:
        import csv

        writer = csv.writer(stdout or sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
        where = (
            "next to each photo (.pts, .landmarks.png); points on standard output"
            if files
            else "standard output"
        )
    else:
        _write_csv(rows, columns, out_dir / "points.csv")
        _write_csv(failures, ["photo", "reason"], out_dir / "failures.csv")
        where = str(out_dir)
    log(f"{done} of {total} photos processed, {faces_total} faces -> {where}")
    if ignored:
        suffixes = Counter(f.suffix.lower() or "(none)" for f in ignored)
        log(
            f"ignored {len(ignored)} files in the folders that are not photos by their suffix: "
            + ", ".join(f"{k} {v}" for k, v in suffixes.most_common())
        )
    for path, reason in failures:
        log(f"  failed {path}: {reason}")
    return {
        "processed": done,
        "faces": faces_total,
        "failures": failures,
        "ignored": [str(f) for f in ignored],
    }
