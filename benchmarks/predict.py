"""Photos to landmarks: lmkit beside dlib on the same photos, in one run.

    python -m benchmarks.predict reports/helen194-best-cpu [--photos ../shared/data/helen68/testset] [--n 170]

Per photo (read from disk, faces found, landmarks; the mean over the photos after one warm-up
photo, one process, nothing else running):

- lmkit as ``lmkit predict`` runs it (the model file's face detector, flip test and re-crops),
  with each backend (ONNX Runtime, PyTorch);
- dlib as its examples run it: ``get_frontal_face_detector()(image, 1)`` (HOG, upsampled once)
  and the 68-point shape predictor (ERT, ``face_recognition_models``) on every face found;
- each face detector of ``model.detector`` alone;

with the annotated faces each detector found (its box overlapping the annotation's by IoU > 0.3).
Then the wall time of ``lmkit predict RUN PHOTO`` in a fresh process: the first use (which writes
the model file's ONNX copy) and the median of three runs after it. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmkit.data.readers import load_image, read_pts
from lmkit.use.detector import DETECTORS, best_match, make_detector
from lmkit.use.inference import Landmarker, model_file
from lmkit.use.peers import dlib_model_file

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "helen68" / "testset"


def annotated_box(photo: Path):
    """The annotated face's landmark box, from the 68-point .pts beside the photo."""
    pts = read_pts(photo.with_suffix(".pts"))
    return (*pts.min(0), *pts.max(0))


def per_photo(photos: list[Path], find) -> tuple[float, int]:
    """Mean ms per photo of ``find(path) -> boxes`` (after one warm-up photo) and the annotated faces found
    (matched after the clock stops)."""
    find(photos[0])
    t0 = time.perf_counter()
    found = [find(p) for p in photos]
    ms = 1000 * (time.perf_counter() - t0) / len(photos)
    return ms, sum(
        best_match(boxes, annotated_box(p), 0.3) is not None for boxes, p in zip(found, photos)
    )


def lmkit_rows(run: str, photos: list[Path]) -> list[dict]:
    """``lmkit predict``'s work per photo with each backend, the model's own face detector."""
    rows = []
    for backend in ("onnx", "torch"):
        lm = Landmarker.load(run, backend=backend, log=print)
        ms, found = per_photo(photos, lambda p: [f.box for f in lm.detect(load_image(p))])
        rows.append(
            {
                "who": "lmkit",
                "network": lm.network.name,
                "detector": lm.detector.name,
                "ms_per_photo": ms,
                "faces_found": found,
                "points": lm.info.n_points,
                "flip_test": lm.flip_test,
                "recrop": lm.recrop,
            }
        )
    return rows


def detector_rows(photos: list[Path]) -> list[dict]:
    """Each face detector of ``model.detector`` alone (photo read from disk and searched)."""
    rows = []
    for key in DETECTORS:
        detector = make_detector(key)
        ms, found = per_photo(photos, lambda p: detector(load_image(p)))
        rows.append(
            {
                "who": "detector",
                "network": "-",
                "detector": f"{key}: {detector.name}",
                "ms_per_photo": ms,
                "faces_found": found,
            }
        )
    return rows


def dlib_row(photos: list[Path]) -> dict | None:
    try:
        import dlib
    except ImportError:
        return None
    if dlib_model_file() is None:
        return None
    detector, shapes = (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(dlib_model_file())),
    )

    def find(p: Path):
        image = dlib.load_rgb_image(str(p))
        rects = detector(image, 1)
        for r in rects:
            shapes(image, r)
        return [(r.left(), r.top(), r.right() + 1, r.bottom() + 1) for r in rects]

    ms, found = per_photo(photos, find)
    return {
        "who": "dlib",
        "network": "ERT shape predictor (68 points)",
        "detector": "HOG, upsampled once",
        "ms_per_photo": ms,
        "faces_found": found,
        "points": 68,
        "flip_test": False,
        "recrop": 0,
    }


def one_photo_wall(run: str, photo: Path, repeats: int = 3) -> dict:
    """``lmkit predict RUN PHOTO`` (points to standard output) in a fresh process, wall seconds:
    the first use, in an empty ONNX cache, then the median of ``repeats``."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "LMKIT_CACHE": cache}
        command = [sys.executable, "-m", "lmkit.chain.pipeline", "predict", run, str(photo)]
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if done.returncode != 0:
                raise SystemExit(f"lmkit predict failed: {done.stderr[-2000:]}")
    return {"first_use_s": times[0], "median_s": statistics.median(times[1:]), "runs_s": times[1:]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a run folder or model file")
    ap.add_argument(
        "--photos",
        type=Path,
        default=Path(os.environ.get("LMKIT_DATA", DEFAULT_PHOTOS.parents[1]))
        / "helen68"
        / "testset",
        help="a folder of photos with 68-point .pts beside them",
    )
    ap.add_argument("--n", type=int, default=170, help="photos (sorted by name)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    model_file(args.run)  # a clear error for a wrong run folder, before anything is timed
    photos = sorted(args.photos.glob("*.jpg"))[: args.n]
    if not photos:
        raise SystemExit(f"{args.photos}: no .jpg photos")
    rows = lmkit_rows(args.run, photos)
    peer = dlib_row(photos)
    rows += ([peer] if peer else []) + detector_rows(photos)
    wall = one_photo_wall(args.run, photos[0])
    from lmkit.chain.pipeline import host as describe_host

    h = describe_host()
    host = f"{h['cpu']}, {h['cores']} cores, {h['isa']}"
    print(f"\n{len(photos)} photos of {args.photos} (one face annotated in each); {host}")
    print(f"{'':8} {'network':32} {'face detector':62} {'ms/photo':>9} {'faces found':>12}")
    for r in rows:
        print(
            f"{r['who']:8} {r['network']:32} {r['detector']:62} {r['ms_per_photo']:9.1f} "
            f"{r['faces_found']:>7} / {len(photos)}"
        )
    if peer:
        best = min((r for r in rows if r["who"] == "lmkit"), key=lambda r: r["ms_per_photo"])
        print(
            f"fastest lmkit ({best['network']}, {best['detector']}): {peer['ms_per_photo'] / best['ms_per_photo']:.2f}x "
            "dlib's photos per second"
        )
    print(
        f"lmkit predict RUN PHOTO, fresh process: first use {wall['first_use_s']:.2f} s (writes the ONNX copy), "
        f"then {wall['median_s']:.2f} s (median of {len(wall['runs_s'])})"
    )
    result = {
        "photos": len(photos),
        "folder": str(args.photos),
        "host": host,
        "rows": rows,
        "one_photo": wall,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
