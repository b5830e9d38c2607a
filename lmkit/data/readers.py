"""Readers for annotated face photos. Every reader yields the same record, `Sample`.

* Helen, official layout: ``annotation/*.txt`` (first line the image name, then one
  ``x , y`` line per point), ``trainnames.txt`` / ``testnames.txt``, images anywhere
  below the root (``helen_1`` ... ``helen_5``).
* 300-W layout: ``NAME.jpg|png`` beside ``NAME.pts`` (``version: 1``, ``n_points: K``,
  ``{``, K lines ``x y``, ``}``), in ``trainset/`` and ``testset/`` folders.

Coordinates are pixels of the stored image (no EXIF rotation is applied), origin at the
top-left corner of the top-left pixel, as in both data sets. The number of points K is
read from the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Sample:
    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    landmarks: np.ndarray  # (K, 2) float32, x then y, pixels
    source: str = ""  # file the sample came from, for error messages


@dataclass
class Entry:
    """A sample not yet read: ``load()`` returns the Sample or raises an error naming the file.
    Preparation reads entries so that ``on_bad_sample: skip`` can go on past a bad one."""

    name: str
    source: str
    load: Callable[[], Sample]


FAR_OUTSIDE = 0.25  # a point more than this fraction of the image size outside it is an error


def load_image(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB, naming the file on failure.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted; the
    stored pixels are used as they are, without applying an EXIF orientation tag, because
    Helen's and 300-W's annotations refer to the stored pixels.
    """
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit: keep the top 8 bits
                a = np.asarray(im).astype(np.uint32)
                a = (a >> 8) if a.max() > 255 else a
                return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file is missing") from None
    except Exception as e:  # PIL raises several kinds for broken or truncated files
        raise ValueError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None


def checked(sample: Sample) -> Sample:
    """Refuse landmarks far outside the image (a wrong file pairing or a broken annotation)."""
    h, w = sample.image.shape[:2]
    lo = -FAR_OUTSIDE * np.array([w, h])
    hi = (1 + FAR_OUTSIDE) * np.array([w, h])
    bad = np.where(((sample.landmarks < lo) | (sample.landmarks > hi)).any(1))[0]
    if len(bad):
        i = int(bad[0])
        x, y = sample.landmarks[i]
        raise ValueError(
            f"{sample.source}: point {i} at ({x:.1f}, {y:.1f}) lies far outside the {w}x{h} image"
            f" ({len(bad)} such points)"
        )
    return sample


def _points(rows: list[str], path: Path, sep: str | None) -> np.ndarray:
    pts = []
    for i, row in enumerate(rows):
        parts = row.split(sep) if sep else row.split()
        try:
            x, y = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"{path}: point {i} is not two numbers: {row.strip()!r}") from None
        pts.append((x, y))
    arr = np.asarray(pts, dtype=np.float32).reshape(-1, 2)
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: landmarks contain NaN or infinity")
    return arr


# ---------------------------------------------------------------- 300-W layout
def read_pts(path: Path) -> np.ndarray:
    """Parse a 300-W ``.pts`` file into a (K, 2) float32 array."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    header = {}
    i = 0
    while i < len(lines) and lines[i] != "{":
        key, _, value = lines[i].partition(":")
        header[key.strip()] = value.strip()
        i += 1
    if i == len(lines) or "n_points" not in header or lines[-1] != "}":
        raise ValueError(f"{path}: not a 300-W .pts file (want 'n_points: K', '{{', K lines, '}}')")
    try:
        k = int(header["n_points"])
    except ValueError:
        raise ValueError(f"{path}: n_points is not an integer: {header['n_points']!r}") from None
    rows = lines[i + 1 : -1]
    if len(rows) != k:
        raise ValueError(f"{path}: header says n_points {k} but the file has {len(rows)} points")
    return _points(rows, path, None)


def write_pts(points: np.ndarray, path: Path) -> None:
    """Write (K, 2) points as a 300-W ``.pts`` file (read back by ``read_pts``), atomically."""
    from lmkit.run.folder import write_text

    rows = "\n".join(f"{x:.3f} {y:.3f}" for x, y in np.asarray(points, dtype=np.float64))
    write_text(f"version: 1\nn_points: {len(points)}\n{{\n{rows}\n}}\n", Path(path))


class NotAnnotated(LookupError):
    """An image with no annotation beside it: listed in the manifest, never trained on."""


def _300w_sample(pts: Path, images: list[Path]) -> Sample:
    if not images:
        raise FileNotFoundError(
            f"{pts}: no image beside it (looked for {', '.join(IMAGE_SUFFIXES)}, any case)"
        )
    if len(images) > 1:
        raise ValueError(
            f"{pts}: several images share its name ({', '.join(p.name for p in images)}); keep one"
        )
    landmarks = read_pts(pts)
    return checked(Sample(pts.stem, load_image(images[0]), landmarks, str(images[0])))


def _not_annotated(image: Path) -> Sample:
    raise NotAnnotated(f"{image}: no annotation beside it ({image.stem}.pts)")


def entries_300w_folder(folder: Path) -> list[Entry]:
    """Every ``NAME.pts`` below ``folder``, to be read with its ``NAME.jpg|png`` beside it
    (suffixes in any case). Images with no ``.pts`` beside them come as entries too, whose
    ``load`` raises ``NotAnnotated``, so that preparation lists them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: 300-W folder does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    pts_files = [p for p in files if p.suffix == ".pts"]
    if not pts_files:
        raise ValueError(f"{folder}: no .pts annotation files found")
    images: dict[tuple[Path, str], list[Path]] = {}
    for p in files:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            images.setdefault((p.parent, p.stem), []).append(p)
    annotated = {(p.parent, p.stem) for p in pts_files}
    entries = [
        Entry(p.stem, str(p), lambda p=p: _300w_sample(p, images.get((p.parent, p.stem), [])))
        for p in pts_files
    ]
    return entries + [
        Entry(key[1], str(imgs[0]), lambda i=imgs[0]: _not_annotated(i))
        for key, imgs in images.items()
        if key not in annotated
    ]


def entries_300w(root: Path, split: str) -> list[Entry]:
    """The ``trainset`` or ``testset`` folder of a 300-W style root."""
    folder = Path(root) / f"{split}set"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing; a 300-W root holds trainset/ and testset/")
    return entries_300w_folder(folder)


def _annotated(entries: list[Entry]) -> Iterator[Sample]:
    for e in entries:
        try:
            yield e.load()
        except NotAnnotated:
            continue


def read_300w_folder(folder: Path) -> Iterator[Sample]:
    """Every annotated sample below a 300-W folder, sorted by name; the first bad one raises."""
    return _annotated(entries_300w_folder(folder))


def read_300w(root: Path, split: str) -> Iterator[Sample]:
    return _annotated(entries_300w(root, split))


# ---------------------------------------------------------------- Helen layout
def read_helen_annotation(path: Path) -> tuple[str, np.ndarray]:
    """A Helen annotation file: the image name, then one ``x , y`` line per point (CRLF line
    ends, blank lines and trailing blanks are accepted)."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    if len(lines) < 2:
        raise ValueError(f"{path}: Helen annotation needs an image name line and point lines")
    return lines[0].strip(), _points(lines[1:], path, ",")


def helen_split_names(root: Path, split: str) -> list[str]:
    """The names listed in ``<split>names.txt``; a name listed twice is an error naming it."""
    names_file = Path(root) / f"{split}names.txt"
    if not names_file.exists():
        raise FileNotFoundError(f"{names_file}: Helen split list is missing")
    names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
    seen, twice = set(), []
    for n in names:
        if n in seen:
            twice.append(n)
        seen.add(n)
    if twice:
        raise ValueError(f"{names_file}: {len(twice)} names are listed twice, e.g. {twice[:3]}")
    return names


HELEN_POINTS = 194  # the release's point count


def entries_helen(root: Path, split: str) -> list[Entry]:
    """Helen's official layout; ``split`` is ``train`` or ``test``. Every listed name becomes an
    entry; one whose annotation or photo is missing, or whose annotation has another point count
    than the release's 194, raises an error naming the file when loaded (so that preparation
    stops, or lists it under ``data.on_bad_sample: skip``). A user may hold the photos of only
    part of the release's 2,330 annotations: ``helen_inventory`` counts what is there."""
    root = Path(root)
    names_file = root / f"{split}names.txt"
    wanted = helen_split_names(root, split)
    annotations, images = _helen_files(root)

    def load(name: str) -> Sample:
        if name not in annotations:
            raise ValueError(
                f"{names_file}: {name!r} has no annotation file in {root / 'annotation'}"
            )
        if name not in images:
            raise FileNotFoundError(
                f"{names_file}: the photo of {name!r} ({name}.jpg) is not found below {root}"
            )
        _, pts = read_helen_annotation(annotations[name])
        if len(pts) != HELEN_POINTS:
            raise ValueError(
                f"{annotations[name]}: has {len(pts)} points, Helen's annotations have {HELEN_POINTS}"
            )
        return checked(Sample(name, load_image(images[name]), pts, str(images[name])))

    return [Entry(n, str(annotations.get(n, names_file)), lambda n=n: load(n)) for n in wanted]


def _helen_files(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """{image name: annotation file} and {image name: photo} of a Helen root; an image name
    annotated by two files is an error naming both."""
    ann_dir = root / "annotation"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"{ann_dir}: Helen annotation folder is missing")
    annotations: dict[str, Path] = {}
    for f in sorted(ann_dir.glob("*.txt")):
        with open(f) as fh:
            first = fh.readline().strip()
        name = first or f.stem
        if name in annotations:
            raise ValueError(
                f"{f}: annotates {name!r}, as {annotations[name]} does already; keep one"
            )
        annotations[name] = f
    images = {p.stem: p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    return annotations, images


def helen_inventory(root: Path) -> dict:
    """What a Helen root holds: annotation files, photos, and per split how many listed names
    have their photo (``used``) and how many do not (``missing``)."""
    root = Path(root)
    annotations, images = _helen_files(root)
    out = {"annotations": len(annotations), "photos": len(images)}
    for split in ("train", "test"):
        if (root / f"{split}names.txt").exists():
            names = helen_split_names(root, split)
            have = sum(n in images and n in annotations for n in names)
            out[split] = {"listed": len(names), "used": have, "missing": len(names) - have}
    return out


def read_helen(root: Path, split: str) -> Iterator[Sample]:
    return (e.load() for e in entries_helen(root, split))
