"""lmkit: run the notebook chain with papermill, export each notebook to HTML with nbconvert,
and write the report's index.html.

examples:
  lmkit run params/quick.yaml                          the whole chain on synthetic faces (minutes)
  lmkit run params/helen68-cpu.yaml -p train.epochs=5  one param changed
  lmkit run params/quick.yaml --out reports/try --force   another folder, every notebook again
  lmkit run params/helen194-best-cpu.yaml              the best CPU recipe on the study's data (RESULTS.md)
  lmkit ablate params/helen68-best-cpu.yaml            after a run: the ablation (notebook 06)
  lmkit predict reports/helen68-best-cpu photos/ --out landmarks/   landmarks on your photos
  lmkit export reports/helen68-best-cpu --format onnx --out model.onnx
  lmkit search-worker reports/paper                    one more worker for a shared search
  lmkit params params/helen194-best-cpu.yaml           the resolved params, and what differs from the study
  lmkit report reports/quick                           after a notebook ran by hand: figures and pages again
  lmkit results reports/* --out RESULTS.md             the results page from run folders

The notebooks run in the same Python environment as this command (a kernel spec pointing
at this interpreter is made for the run; nothing to register by hand). A failing notebook
stops the chain with a message naming the notebook and the failing cell.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lmkit import __version__
from lmkit.chain.lock import RunInUse
from lmkit.chain.pipeline import (
    ABLATION_NOTEBOOK,
    NOTEBOOKS,
    ChainError,
    params_changes,
    report,
    run_chain,
)
from lmkit.run import params as P
from lmkit.run.folder import RunFolder

STUDY_PARAMS = Path(__file__).resolve().parents[1] / "params" / "paper.yaml"
OVERRIDE_HELP = "override one param, e.g. -p train.epochs=3 (a YAML value; repeatable)"


def parser() -> argparse.ArgumentParser:
    """The ``lmkit`` command's arguments: one sub-command per handler of ``HANDLERS``."""
    head, _, examples = __doc__.partition("\n\n")
    top = argparse.ArgumentParser(
        prog="lmkit",
        description=head,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"lmkit {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("run", help="run the notebook chain and write the report")
    r.add_argument("params", help="params file, e.g. params/quick.yaml")
    r.add_argument(
        "-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=OVERRIDE_HELP
    )
    r.add_argument("--out", help="run folder (default reports/<name>)")
    r.add_argument(
        "--force",
        action="store_true",
        help="re-run every notebook, even those whose outputs are current",
    )
    r.add_argument(
        "--quiet", action="store_true", help="no progress lines from inside the notebooks"
    )
    a = sub.add_parser(
        "ablate", help="after a run: train and test each recipe change (notebook 06_ablation)"
    )
    a.add_argument("params", help="the params file of the run")
    a.add_argument(
        "-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=OVERRIDE_HELP
    )
    a.add_argument("--out", help="the run folder (default reports/<name>)")
    w = sub.add_parser(
        "search-worker",
        help="one more worker for a run's search (shared search.storage)",
        description="Run trials of a run's hyper-parameter search on this machine until the study "
        "has search.trials complete, then print the winner. The run folder (on storage this machine "
        "shares) must be prepared (01_prepare done) and its params must set search.storage to a "
        "database every worker reaches, e.g. postgresql://user@host/lmkit. Start as many as you like, "
        "on as many machines, while the chain's 02_hpsearch runs; each trial runs exactly once. "
        "The worker takes the run's own params (its params.yaml): nothing to override.",
    )
    w.add_argument("run", help="the run folder")
    pr = sub.add_parser(
        "predict",
        help="landmarks for photos with a trained run's model and face detector",
        description="Find the faces in each photo and their landmarks. Writes, per photo, "
        "<stem>.pts (300-W format; more faces as <stem>_2.pts, ...) and <stem>.png (the photo "
        "with boxes and points), and points.csv and failures.csv for all. A bad photo (unreadable, "
        "not an image, no face found) is listed with its reason and the batch goes on. Without --out, "
        "one photo's points go to standard output (CSV), and for several photos the .pts and "
        "<stem>.landmarks.png go next to each photo. Exit code: "
        "0 when at least one photo was processed, 1 when none could be.",
    )
    pr.add_argument("model", help="a run folder (its train/model.pt) or a model file")
    pr.add_argument(
        "photos", nargs="+", help="photos and folders of photos (searched at any depth)"
    )
    pr.add_argument(
        "--out",
        help="output folder (default: one photo's points to standard output; for several, "
        "each photo's .pts and .landmarks.png next to it and all points to standard output)",
    )
    pr.add_argument(
        "--backend",
        choices=("auto", "onnx", "torch"),
        default="auto",
        help="onnx: the network in ONNX Runtime on the CPU, from an ONNX copy of the model file cached on "
        "first use ($LMKIT_CACHE, else ~/.cache/lmkit); torch: in PyTorch on --device; auto (default): "
        "onnx when onnxruntime is installed and --device is not cuda",
    )
    pr.add_argument(
        "--device",
        default="auto",
        help="for --backend torch: auto (CUDA when present), cpu, cuda, ...",
    )
    pr.add_argument(
        "--flip-test",
        choices=("model", "on", "off"),
        default="model",
        help="average with the mirrored crop's prediction (default: as the model file says)",
    )
    pr.add_argument(
        "--recrop",
        type=int,
        metavar="N",
        help="from the face detector's box, cut the face out again "
        "from the points found and predict again, N times (default: as the model file says)",
    )
    pr.add_argument(
        "--boxes",
        metavar="CSV",
        help="the faces' boxes instead of lmkit's face detector: a CSV with "
        "columns photo,x0,y0,x1,y1 (photo pixels, one row per face), by default another face detector's "
        "boxes (as face-alignment and mmpose take them), turned into crops by the model's box calibration",
    )
    pr.add_argument(
        "--box-kind",
        choices=("detector", "crop"),
        default="detector",
        help="what --boxes holds: face detector boxes (default; the model file's box calibration makes "
        "them crops) or crop boxes in lmkit's convention (needed for a model without a calibration, "
        "one trained on synthetic faces)",
    )
    e = sub.add_parser(
        "export",
        help="write a trained run's network as TorchScript or ONNX",
        description="The exported network takes uint8 RGB crops (B, S, S, 3) at the model's "
        "input size S and returns points (B, K, 2) in pixels of those crops; the normalisation "
        "is inside.",
    )
    e.add_argument("model", help="a run folder (its train/model.pt) or a model file")
    e.add_argument("--format", required=True, choices=("torchscript", "onnx"))
    e.add_argument("--out", required=True, help="the file to write")
    pp = sub.add_parser(
        "params",
        help="print a params file resolved, and how it differs from the study's settings",
        description="The params a run would use (the file, its base: files and the defaults), then "
        "every key whose value differs from params/paper.yaml, the study's settings.",
    )
    pp.add_argument("params", help="params file, e.g. params/helen194-best-cpu.yaml")
    pp.add_argument(
        "-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=OVERRIDE_HELP
    )
    rp = sub.add_parser(
        "report",
        help="rebuild a run's figures and report pages from what its folder holds "
        "(after a notebook ran outside lmkit run)",
    )
    rp.add_argument("run", help="the run folder")
    sub.add_parser(
        "results",
        help="the results page (RESULTS.md) from run folders and the archive of earlier rows",
        add_help=False,
    )
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["results"]:  # its own parser (lmkit results --help)
        from lmkit.report.results import main as results

        return results(argv[1:])
    args = parser().parse_args(argv)
    return HANDLERS[args.command](args)


def _run(args) -> int:
    """``lmkit run`` and ``lmkit ablate``: the chain, or notebook 06 after it."""
    try:
        t0 = time.perf_counter()
        notebooks = NOTEBOOKS if args.command == "run" else (ABLATION_NOTEBOOK,)
        run_chain(
            args.params,
            args.overrides,
            args.out,
            notebooks=notebooks,
            force=getattr(args, "force", True),
            quiet=getattr(args, "quiet", False),
        )
        print(f"finished in {time.perf_counter() - t0:.0f} s")
    except (ChainError, P.ParamsError, FileNotFoundError, RunInUse) as e:
        print(f"lmkit: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, read-only folder: one line naming the path
        print(f"lmkit: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


def _report(args) -> int:
    try:
        report(args.run)
    except (ChainError, P.ParamsError, FileNotFoundError, RunInUse) as e:
        print(f"lmkit report: {e}", file=sys.stderr)
        return 1
    return 0


def _params(args) -> int:
    import yaml

    try:
        params = P.load(args.params, args.overrides)
        study = P.load(STUDY_PARAMS)
    except (P.ParamsError, FileNotFoundError) as e:
        print(f"lmkit params: {e}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(params.model_dump(), sort_keys=False, allow_unicode=True).rstrip())
    ignore = {"name", "data.root"}  # where the data lie is not a difference of protocol
    changes = [c for c in params_changes(study, params) if c.split(":")[0] not in ignore]
    print(
        f"\n# differs from the study's settings ({STUDY_PARAMS.name}) in {len(changes)} keys (study -> this file):"
    )
    for c in changes:
        print(f"#   {c}")
    return 0


def _search_worker(args) -> int:
    from lmkit.train.search import search_worker

    try:
        search_worker(RunFolder(args.run))
    except (OSError, ValueError, RuntimeError, P.ParamsError) as err:
        print(f"lmkit search-worker: {err}", file=sys.stderr)
        return 1
    return 0


def _predict(args) -> int:
    from lmkit.use.inference import Landmarker, predict_files, read_boxes

    try:
        flip = {"model": None, "on": True, "off": False}[args.flip_test]
        log = (
            print if args.out else (lambda m: print(m, file=sys.stderr))
        )  # standard output holds the points
        lm = Landmarker.load(
            args.model,
            device=args.device,
            flip_test=flip,
            recrop=args.recrop,
            backend=args.backend,
            log=log,
        )
        boxes = read_boxes(args.boxes) if args.boxes else None
        if lm.info.box_calibration is None and (boxes is None or args.box_kind == "detector"):
            raise ValueError(
                f"{args.model}: this model has no box calibration ({lm.info.dataset}), so a face "
                "detector's box cannot be turned into the crop it was trained on; give each face's crop "
                "box with --boxes FILE.csv --box-kind crop (columns photo,x0,y0,x1,y1, photo pixels)"
            )
        if boxes is None:
            lm.detector  # the face detector the model asks for, found before any photo: one clear error, not one per photo
        result = predict_files(
            lm,
            args.photos,
            args.out,
            boxes=boxes,
            box=args.box_kind,
            log=log,
            progress=bool(args.out),
        )
    except (OSError, ValueError, RuntimeError) as err:
        print(f"lmkit predict: {err}", file=sys.stderr)
        return 1
    return 0 if result["processed"] else 1


def _export(args) -> int:
    from lmkit.use.export import export

    try:
        out = export(args.model, args.format, args.out)
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        print(f"lmkit export: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


HANDLERS = {
    "run": _run,
    "ablate": _run,
    "report": _report,
    "params": _params,
    "search-worker": _search_worker,
    "predict": _predict,
    "export": _export,
}

if __name__ == "__main__":
    sys.exit(main())
