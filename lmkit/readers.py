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
from typing import Iterator

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Sample:
    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    landmarks: np.ndarray  # (K, 2) float32, x then y, pixels
    source: str = ""  # file the sample came from, for error messages


def load_image(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB, naming the file on failure."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file is missing") from None
    except Exception as e:  # PIL raises several kinds for broken files
        raise ValueError(f"{path}: cannot decode image ({e})") from None


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


def read_300w_folder(folder: Path) -> Iterator[Sample]:
    """Every ``NAME.pts`` below ``folder`` with its ``NAME.jpg|png`` beside it, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: 300-W folder does not exist")
    pts_files = sorted(folder.rglob("*.pts"))
    if not pts_files:
        raise ValueError(f"{folder}: no .pts annotation files found")
    for pts in pts_files:
        image_path = next((pts.with_suffix(s) for s in IMAGE_SUFFIXES if pts.with_suffix(s).exists()), None)
        if image_path is None:
            raise FileNotFoundError(f"{pts}: no image beside it (looked for {', '.join(IMAGE_SUFFIXES)})")
        yield Sample(pts.stem, load_image(image_path), read_pts(pts), str(image_path))


def read_300w(root: Path, split: str) -> Iterator[Sample]:
    """The ``trainset`` or ``testset`` folder of a 300-W style root."""
    folder = Path(root) / f"{split}set"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing; a 300-W root holds trainset/ and testset/")
    return read_300w_folder(folder)


# ---------------------------------------------------------------- Helen layout
def read_helen_annotation(path: Path) -> tuple[str, np.ndarray]:
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    if len(lines) < 2:
        raise ValueError(f"{path}: Helen annotation needs an image name line and point lines")
    return lines[0].strip(), _points(lines[1:], path, ",")


def read_helen(root: Path, split: str) -> Iterator[Sample]:
    """Helen's official layout; ``split`` is ``train`` or ``test``."""
    root = Path(root)
    names_file = root / f"{split}names.txt"
    if not names_file.exists():
        raise FileNotFoundError(f"{names_file}: Helen split list is missing")
    wanted = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
    ann_dir = root / "annotation"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"{ann_dir}: Helen annotation folder is missing")
    annotations = {}
    for f in sorted(ann_dir.glob("*.txt")):
        name, pts = read_helen_annotation(f)
        annotations[name] = (pts, f)
    images = {p.stem: p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    for name in wanted:
        if name not in annotations:
            raise ValueError(f"{names_file}: {name!r} has no annotation file in {ann_dir}")
        if name not in images:
            raise FileNotFoundError(f"{names_file}: image {name!r} not found below {root}")
        pts, _ = annotations[name]
        yield Sample(name, load_image(images[name]), pts, str(images[name]))
