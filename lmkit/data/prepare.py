"""Preparation as in the study: crop each face from its annotations, resize to 300x300,
map the landmarks exactly, cache each split once, split validation from training.

A cache folder holds ``images.npy`` (N, S, S, 3) uint8, ``landmarks.npy`` (N, K, 2)
float32 in pixels of the S x S crop, ``names.json``, ``sources.json`` (each face's file and
crop box in it) and ``manifest.json`` (source, parameters, counts). It is written to a temporary folder and renamed, so a killed run
never leaves half a cache; a cache whose manifest matches the parameters is reused.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from lmkit.run.params import DEFAULTS, Data
from lmkit.run.digests import files_digest
from lmkit.run.progress import emit
from lmkit.data.readers import (
    Entry,
    NotAnnotated,
    Sample,
    entries_300w,
    entries_300w_folder,
    entries_helen,
    helen_inventory,
)
from lmkit.study.schemes import scheme_for_points
from lmkit.data.synthetic import synthetic_entries


_DATA = DEFAULTS.data  # the crop convention's defaults are the params schema's


# the eyes-mouth box, in units of r (the mean of the eye-to-mouth and the eye-to-eye distance) about the
# midpoint between the eyes' centre and the mouth's: the median landmark box (forehead 1/3 included) of
# the helen68 training photos, so that both conventions frame the same face on average
EYES_MOUTH_BOX = (-1.08, -1.67, 1.08, 1.22)


def annotation_box(
    landmarks: np.ndarray,
    forehead: float = _DATA.forehead,
    padding: float = _DATA.padding,
    box: str = _DATA.box,
) -> tuple[float, ...]:
    """The crop box of a face from its annotation, by the crop convention ``box``:

    - ``landmarks`` (lmkit's): the box of all landmarks, extended upward by ``forehead`` x its
      height, padded on every side by ``padding`` x its larger side;
    - ``study`` (the study's ``crop_face.py``): the same box on whole pixels (``int()`` of each
      edge), padded by ``padding`` *pixels of the photo* on every side (see ``crop_box`` for its
      clipping);
    - ``eyes-mouth``: a box placed and sized from the eye and mouth centres only
      (``EYES_MOUTH_BOX``), so that it says nothing of where the jaw is, as a face detector's
      box cannot either; padded as ``landmarks``.

    Returns (x0, y0, x1, y1), not clipped."""
    if box in ("landmarks", "study"):
        x0, y0 = landmarks.min(0)
        x1, y1 = landmarks.max(0)
        y0 -= forehead * (y1 - y0)
        if box == "study":
            y0 = (
                y0 if y0 > 0 else padding
            )  # crop_face.py: a raised top above the photo becomes the padding
            x0, y0, x1, y1 = (float(int(v)) for v in (x0, y0, x1, y1))
            return (x0 - padding, y0 - padding, x1 + padding, y1 + padding)
    elif box == "eyes-mouth":
        scheme = scheme_for_points(len(landmarks))
        eye_a, eye_b = (
            landmarks[scheme.group(g).indices].mean(0) for g in (scheme.left_eye, scheme.right_eye)
        )
        eyes, mouth = (eye_a + eye_b) / 2, landmarks[scheme.group("outer_lips").indices].mean(0)
        r = (np.linalg.norm(mouth - eyes) + np.linalg.norm(eye_b - eye_a)) / 2
        cx, cy = (eyes + mouth) / 2
        x0, y0, x1, y1 = (
            cx + EYES_MOUTH_BOX[0] * r,
            cy + EYES_MOUTH_BOX[1] * r,
            cx + EYES_MOUTH_BOX[2] * r,
            cy + EYES_MOUTH_BOX[3] * r,
        )
    else:
        raise ValueError(f"data.box: must be 'landmarks', 'study' or 'eyes-mouth', got {box!r}")
    pad = padding * max(x1 - x0, y1 - y0)
    return tuple(float(v) for v in (x0 - pad, y0 - pad, x1 + pad, y1 + pad))


def clip_box(box, image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box clipped to the photo, as training crops were; refuses one outside it."""
    h, w = image_hw
    out = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
    if out[2] - out[0] < 1 or out[3] - out[1] < 1:
        raise ValueError(f"box {tuple(round(v, 1) for v in box)} lies outside the {w}x{h} photo")
    return tuple(float(v) for v in out)


def crop_box(
    landmarks: np.ndarray,
    image_hw: tuple[int, int],
    forehead: float = _DATA.forehead,
    padding: float = _DATA.padding,
    box: str = _DATA.box,
) -> tuple[float, float, float, float]:
    """The annotation box (``annotation_box``) clipped to the image. Returns (x0, y0, x1, y1).

    With ``box="study"`` the clipping is ``crop_face.py``'s: an edge whose padding would leave
    the photo keeps its unpadded whole-pixel position (then clipped at 0 and the photo's size).

    Used in: 01_prepare, "One face, from its box to what the network sees"."""
    b = annotation_box(landmarks, forehead, padding, box)
    if box == "study":
        h, w = image_hw
        x0, y0, x1, y1 = b
        x0 = x0 if x0 > 0 else x0 + padding
        y0 = y0 if y0 >= 0 else y0 + padding
        x1 = x1 if x1 <= w else x1 - padding
        y1 = y1 if y1 < h else y1 - padding
        b = (x0, y0, x1, y1)
    return clip_box(b, image_hw)


def crop_image(image: np.ndarray, box, size: int) -> np.ndarray:
    """Cut ``box`` out of ``image`` and resize it to size x size (bilinear, antialiased)."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, box=tuple(box)))


def crop_to_photo(box, size: int):
    """The map from pixels of a size x size crop of ``box`` to pixels of the photo
    (scikit-image's AffineTransform; ``.inverse`` maps the photo into the crop):
    x = x0 + x' * (x1 - x0) / size, likewise y (coordinates on pixel corners)."""
    from skimage.transform import AffineTransform

    x0, y0, x1, y1 = box
    return AffineTransform(scale=((x1 - x0) / size, (y1 - y0) / size), translation=(x0, y0))


def crop_and_resize(
    image: np.ndarray, landmarks: np.ndarray, box, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``crop_image``, with the landmarks following exactly (``crop_to_photo(box, size).inverse``).

    Used in: 01_prepare, "One face, from its box to what the network sees"."""
    pts = crop_to_photo(box, size).inverse(landmarks.astype(np.float64))
    return crop_image(image, box, size), pts.astype(np.float32)


@dataclass
class PreparedSet:
    """A prepared split: uint8 crops, landmarks in crop pixels, names, manifest."""

    images: np.ndarray
    landmarks: np.ndarray
    names: list[str]
    manifest: dict

    def __len__(self) -> int:
        return len(self.names)


class Subset:
    """Rows ``indices`` of an array (a memory map stays one: rows are read when indexed)."""

    def __init__(self, base: np.ndarray, indices):
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.shape = (len(self.indices), *base.shape[1:])
        self.dtype = base.dtype

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key):
        return self.base[self.indices[key]]

    def __array__(self, dtype=None, copy=None):
        a = self.base[self.indices]
        return a if dtype is None else a.astype(dtype)


def _as_entries(samples: Iterable[Sample | Entry]) -> Iterator[Entry]:
    for s in samples:
        yield s if isinstance(s, Entry) else Entry(s.name, s.source or s.name, lambda s=s: s)


def write_cache(
    samples: Iterable[Sample | Entry],
    folder: Path,
    manifest: dict,
    size: int = _DATA.crop_size,
    forehead: float = _DATA.forehead,
    padding: float = _DATA.padding,
    on_bad_sample: str = _DATA.on_bad_sample,
    box: str = _DATA.box,
) -> PreparedSet:
    """Crop, resize and cache ``samples`` (or entries) into ``folder`` atomically.

    A bad sample (unreadable image, broken annotation, wrong point count, points far outside,
    duplicate name) raises an error naming its file; with ``on_bad_sample="skip"`` it is left
    out and listed, with the reason, under ``skipped`` in the manifest.
    """
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"data.on_bad_sample: must be error or skip, got {on_bad_sample!r}")
    folder = Path(folder)
    images, landmarks, names, boxes, sources, skipped, unannotated = [], [], [], [], [], [], []
    face_sizes, margins = (
        [],
        [],
    )  # the larger side of each face's landmark box; the crop's side margin; photo pixels
    annotations = []  # the file each face's points came from, for messages
    seen = set()
    for e in _as_entries(samples):
        try:
            if e.name in seen:
                raise ValueError(f"{e.source}: duplicate sample name {e.name!r}")
            s = e.load()
            crop = crop_box(s.landmarks, s.image.shape[:2], forehead, padding, box)
            img, pts = crop_and_resize(s.image, s.landmarks, crop, size)
        except NotAnnotated:
            unannotated.append(e.source)
            continue
        except (ValueError, OSError) as err:
            message = str(err) if e.source in str(err) else f"{e.source}: {err}"
            if on_bad_sample == "error":
                raise type(err)(message) from None
            skipped.append({"name": e.name, "source": e.source, "reason": message})
            continue
        seen.add(e.name)
        images.append(img)
        landmarks.append(pts)
        names.append(s.name)
        boxes.append(crop)
        face_sizes.append(float(np.ptp(s.landmarks, axis=0).max()))
        margins.append(
            float(s.landmarks[:, 0].min() - crop[0] + crop[2] - s.landmarks[:, 0].max()) / 2
        )
        sources.append(s.source)
        annotations.append(e.source)
    # every sample must have the point count most of them have
    counts = [len(p) for p in landmarks]
    k = max(set(counts), key=counts.count) if counts else 0
    odd = [i for i, c in enumerate(counts) if c != k]
    for i in odd:
        message = f"{annotations[i]}: has {counts[i]} points, the other samples have {k}"
        if on_bad_sample == "error":
            raise ValueError(message)
        skipped.append({"name": names[i], "source": sources[i], "reason": message})
    if odd:
        keep = [i for i in range(len(names)) if counts[i] == k]
        images, landmarks, names, boxes, sources, face_sizes, margins = (
            [a[i] for i in keep]
            for a in (images, landmarks, names, boxes, sources, face_sizes, margins)
        )
    if not names:
        raise ValueError(
            f"{folder}: the split is empty (source: {manifest.get('source')}; "
            f"{len(skipped)} bad samples skipped)"
        )
    manifest = {
        **manifest,
        "count": len(names),
        "n_points": int(landmarks[0].shape[0]),
        "crop_size": size,
        "forehead": forehead,
        "padding": padding,
        "box": box,
        "skipped": skipped,
        "unannotated": unannotated,
        "margin": crop_margin(face_sizes, margins),
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(
        tmp, 0o777 & ~umask
    )  # mkdtemp makes it private; a shared data.cache_dir is read by the group
    try:
        np.save(tmp / "images.npy", np.stack(images))
        np.save(tmp / "landmarks.npy", np.stack(landmarks))
        (tmp / "names.json").write_text(json.dumps(names))
        (tmp / "sources.json").write_text(json.dumps({"sources": sources, "boxes": boxes}))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return load_cache(folder)


def crop_margin(face_sizes: list[float], margins: list[float]) -> dict:
    """How much room the crops leave beside the face: the median over the faces of the mean of
    the left and right margins between the landmarks and the crop's edges, in photo pixels and
    as a fraction of the face (the larger side of its landmark box). The study's 5 pixels are a
    larger share of a small face than of a large one."""
    sizes, room = np.asarray(face_sizes), np.asarray(margins)
    return {
        "pixels": round(float(np.median(room)), 2),
        "fraction_of_face": round(float(np.median(room / sizes)), 4),
        "face_pixels": round(float(np.median(sizes)), 1),
    }


def load_sources(folder: Path) -> tuple[list[str], np.ndarray]:
    """Each face's source file and its crop box (x0, y0, x1, y1) in that file's pixels.

    Used in: 04_evaluate, "The study's two numbers, computed here"."""
    d = json.loads((Path(folder) / "sources.json").read_text())
    return d["sources"], np.asarray(d["boxes"], dtype=np.float64)


def load_cache(folder: Path) -> PreparedSet:
    folder = Path(folder)
    manifest_file = folder / "manifest.json"
    if not manifest_file.exists():
        raise FileNotFoundError(f"{folder}: no prepared cache here (run notebook 01_prepare first)")
    # memory-mapped: a large set is read as batches need it
    return PreparedSet(
        np.load(folder / "images.npy", mmap_mode="r"),
        np.load(folder / "landmarks.npy", mmap_mode="r"),
        json.loads((folder / "names.json").read_text()),
        {**MANIFEST_BEFORE, **json.loads(manifest_file.read_text())},
    )


def source_entries(data: Data, split: str, seed: int) -> list[Entry]:
    """The samples of ``split`` (train/test), not yet read, for a ``data`` params section."""
    source = data.source
    if split == "joint":  # faces of another landmark scheme, trained through outputs of their own
        return list(itertools.chain(*(entries_300w_folder(f) for f in data.joint_train)))
    if source == "synthetic":
        return synthetic_entries(getattr(data, f"synthetic_{split}"), split, seed)
    if data.root in (None, ""):
        raise ValueError(f"data.root: must name the {source} folder when data.source is {source!r}")
    extra = [entries_300w_folder(f) for f in data.extra_train] if split == "train" else []
    if source == "helen":
        return list(itertools.chain(entries_helen(data.root, split), *extra))
    if source == "300w":
        return list(itertools.chain(entries_300w(data.root, split), *extra))
    raise ValueError(f"data.source: unknown source {source!r} (synthetic, helen, 300w)")


MANIFEST_BEFORE = {
    "box": "landmarks"
}  # what caches made before a manifest key existed did (load_cache fills it in)


def cache_key(data: Data, split: str, seed: int) -> dict:
    """What a cache depends on: the manifest must match it for the cache to be reused."""
    key = {
        "source": data.source,
        "split": split,
        "crop_size": data.crop_size,
        "forehead": data.forehead,
        "padding": data.padding,
        "box": data.box,
        "on_bad_sample": data.on_bad_sample,
    }
    if split == "joint":
        key["joint_train"] = [str(Path(f).resolve()) for f in data.joint_train]
        key["files"] = files_digest([Path(f) for f in data.joint_train])
    elif data.source == "synthetic":
        key.update(seed=seed, requested=getattr(data, f"synthetic_{split}"))
    else:
        key["root"] = str(Path(data.root).resolve())
        folders = [Path(data.root)]
        if split == "train" and data.extra_train:
            key["extra_train"] = [str(Path(f).resolve()) for f in data.extra_train]
            folders += [Path(f) for f in data.extra_train]
        key["files"] = files_digest(folders)
    return key


def prepare(data: Data, seed: int, cache_dir: Path, log=print) -> dict[str, PreparedSet]:
    """Prepare (or reuse) the train and test caches below ``cache_dir``, and with
    ``data.joint_train`` the ``joint`` cache of the faces of another scheme."""
    splits = ("train", "test", "joint") if data.joint_train else ("train", "test")
    out, keys = {}, {split: cache_key(data, split, seed) for split in splits}
    for split in splits:
        folder = Path(cache_dir) / split
        if (folder / "manifest.json").exists():
            cached = load_cache(folder)
            if all(cached.manifest.get(k) == v for k, v in keys[split].items()):
                emit(
                    log,
                    "prepare",
                    f"{split}: reusing cache {folder} ({len(cached)} faces; its parameters and files unchanged)",
                )
                out[split] = cached
            else:
                changed = [k for k, v in keys[split].items() if cached.manifest.get(k) != v]
                emit(
                    log,
                    "prepare",
                    f"{split}: preparing again: {', '.join('the data files' if k == 'files' else k for k in changed)} "
                    "changed since the cache was made",
                )
    if len(out) < len(splits):
        entries = {split: source_entries(data, split, seed) for split in splits if split not in out}
        names = {
            split: set(out[split].names) if split in out else {e.name for e in entries[split]}
            for split in ("train", "test")
        }
        both = sorted(names["train"] & names["test"])
        if both and data.on_bad_sample == "error":
            raise ValueError(
                f"{len(both)} names are in both the train and the test split, e.g. {both[:5]} "
                "(set data.on_bad_sample: skip to leave them out of training)"
            )
        inventory = helen_inventory(data.root) if data.source == "helen" else {}
        if inventory:
            log(
                f"Helen root {data.root}: {inventory['annotations']} annotation files, {inventory['photos']} photos; "
                + "; ".join(
                    f"{k}: {v['used']} of {v['listed']} listed faces have their photo ({v['missing']} missing)"
                    for k, v in inventory.items()
                    if k in ("train", "test")
                )
            )
        for split, split_entries in entries.items():
            if split == "train" and both:  # test images never trained on
                leak = set(both)
                split_entries = [
                    e if e.name not in leak else _refused(e, "also in the test split")
                    for e in split_entries
                ]
            listed = {"inventory": inventory[split]} if split in inventory else {}
            out[split] = write_cache(
                split_entries,
                Path(cache_dir) / split,
                keys[split] | listed,
                data.crop_size,
                data.forehead,
                data.padding,
                data.on_bad_sample,
                data.box,
            )
            skipped = out[split].manifest["skipped"]
            emit(
                log,
                "prepare",
                f"{split}: prepared {len(out[split])} faces into {Path(cache_dir) / split}"
                + (f"; skipped {len(skipped)} bad samples:" if skipped else ""),
            )
            for bad in skipped:
                emit(log, "skipped", f"  skipped {bad['reason']}")
            unannotated = out[split].manifest.get("unannotated", [])
            if unannotated:
                emit(
                    log,
                    "skipped",
                    f"  {split}: {len(unannotated)} images have no annotation beside them and are not used, "
                    f"e.g. {unannotated[:3]}",
                )
    return out


def _refused(entry: Entry, reason: str) -> Entry:
    def load():
        raise ValueError(f"{entry.source}: {reason}")

    return Entry(entry.name, entry.source, load)


def split_train_val(
    n: int, val_fraction: float, seed: int, protocol: str = "clean"
) -> dict[str, list[int]]:
    """Indices of training and validation images among the ``n`` prepared training images.

    ``clean`` (default): validation images are held out before any augmentation, so no
    copy of them is ever trained on. ``paper``: the study's protocol, validation images
    are also training images (the study validated on augmented copies of them).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"data.val_fraction: must be between 0 and 1, got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    val = sorted(perm[:n_val].tolist())
    if protocol == "clean":
        train = sorted(perm[n_val:].tolist())
    elif protocol == "paper":
        train = list(range(n))
    else:
        raise ValueError(f"data.split: unknown protocol {protocol!r} (clean, paper)")
    return {"train": train, "val": val, "protocol": protocol}
