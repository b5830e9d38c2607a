"""lmkit: run the notebook chain with papermill, export each notebook to HTML with nbconvert,
and write the report's index.html.

examples:
  lmkit run params/quick.yaml                          the whole chain on synthetic faces (minutes)
  lmkit run params/helen68-cpu.yaml -p train.epochs=5  one param changed
  lmkit run params/quick.yaml --out reports/try --force   another folder, every notebook again
  lmkit run params/helen194-best-cpu.yaml              the best CPU recipe on the study's data (45 min)
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
import json
import os
import re
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from .. import cells
from .. import params as P
from .. import progress
from ..runfolder import RunFolder, write_json, write_text
from . import reuse
from . import stages as S
from .lock import RunInUse, environ, run_lock

NOTEBOOKS = S.NOTEBOOKS  # what lmkit run runs, in order (lmkit.stages declares each)
ABLATION_NOTEBOOK = S.CHAIN[-1]
KERNEL_NAME = "lmkit-python"
# what lmkit run sets besides the run folder and params: no live widgets in an exported report
NOTEBOOK_PARAMETERS = {"05_figures": {"interactive": False}}


class ChainError(RuntimeError):
    pass


@contextmanager
def this_python_kernel():
    """A kernel spec for this very interpreter, found first on JUPYTER_PATH for the run."""
    folder = Path(tempfile.mkdtemp(prefix="lmkit-kernel-"))
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "lmkit.chain.kernel", "-f", "{connection_file}", "--IPKernelApp.log_level=ERROR"],
        "display_name": "lmkit (this Python)", "language": "python"}))
    try:
        with environ("JUPYTER_PATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("JUPYTER_PATH")]))):
            yield KERNEL_NAME
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def export_html(notebook: Path, chain=NOTEBOOKS + (ABLATION_NOTEBOOK,)) -> Path:
    """The executed notebook as an HTML page, with links back to the report and on to the
    next notebook of the chain."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    name = notebook.stem
    links = ["<a href='../index.html'>report index</a>"]
    if name in chain:
        i = chain.index(name)
        if i > 0:
            links.append(f"<a href='{chain[i - 1]}.html'>previous: {chain[i - 1]}</a>")
        if i + 1 < len(NOTEBOOKS):
            links.append(f"<a href='{chain[i + 1]}.html'>next: {chain[i + 1]}</a>")
    nav = ("<nav style='font-family:system-ui,sans-serif;padding:6px 12px;background:#f3f3f3;border-bottom:1px solid #ccc'>"
           + " · ".join(links) + "</nav>")
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, body, count=1)
    out = notebook.with_suffix(".html")
    write_text(body, out)
    return out


def provenance(params: dict) -> dict:
    """What a result needs to be traced and repeated."""
    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "git_commit": commit,
            "seed": params["seed"], "device": "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available()
            else f"cpu ({os.cpu_count()} cores)", "host": host(),
            "packages": {p: version(p) for p in ("lmkit", "torch", "torchvision", "numpy", "optuna", "papermill")}}


def host() -> dict:
    """The machine a run's times come from: CPU model, cores, the instruction set PyTorch uses
    and whether bfloat16 is native (times from an AVX2 host and an AVX-512 one differ by 2x)."""
    import torch

    from ..placement import cpu_has_bf16

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = torch.backends.cpu.get_cpu_capability() + (", native bf16" if cpu_has_bf16() else "")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, **({"gpu": gpu} if gpu else {})}


LAYOUTS = {"helen": ("trainnames.txt", "annotation"), "300w": ("trainset", "testset")}


def preflight(params: dict, run: RunFolder) -> None:
    """Refuse, before any notebook starts, what would fail later: a missing data folder or one
    in another layout, a device that is not there, ImageNet weights that cannot be had, a run
    folder that cannot be written."""
    d = params["data"]
    if d["source"] == "synthetic":
        n_val = max(1, round(d["synthetic_train"] * d["val_fraction"]))
        if d["synthetic_train"] - n_val < params["train"]["batch_size"]:
            raise ChainError(f"too little data: data.synthetic_train {d['synthetic_train']} leaves "
                             f"{d['synthetic_train'] - n_val} training faces after {n_val} for validation, fewer than "
                             f"train.batch_size {params['train']['batch_size']}")
    else:
        root = Path(d["root"] or "")
        if not d["root"] or not root.is_dir():
            raise ChainError(f"data.root: {root} is not a folder (data.source: {d['source']})")
        missing = [f for f in LAYOUTS[d["source"]] if not (root / f).exists()]
        if missing:
            other = next((name for name, files in LAYOUTS.items()
                          if name != d["source"] and all((root / f).exists() for f in files)), None)
            hint = f"; it looks like the {other} layout: set data.source: {other}" if other else ""
            raise ChainError(f"data.root: {root} is not in the {d['source']} layout (missing "
                             f"{', '.join(missing)}){hint}")
        for extra in d["extra_train"]:
            if not Path(extra).is_dir():
                raise ChainError(f"data.extra_train: {extra} is not a folder")
    device = params["train"]["device"]
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ChainError(f"train.device: {device} asked for, but this machine has no CUDA device (use auto or cpu)")
    if params["model"]["pretrained"]:
        from ..model import imagenet_weights

        try:
            imagenet_weights()
        except RuntimeError as e:
            raise ChainError(f"model.pretrained: {e}") from None
    try:
        run.root.mkdir(parents=True, exist_ok=True)
        probe = run.root / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ChainError(f"{run.root}: the run folder cannot be written ({e.strerror})") from None


@contextmanager
def _progress_to(run: RunFolder, name: str, log, quiet: bool):
    """The progress events of notebook ``name`` (``lmkit.progress``): recorded in
    ``progress/<name>.jsonl`` of the run folder and, unless ``quiet``, each message passed to
    ``log`` as it happens. The notebook's kernel finds the file through $LMKIT_PROGRESS."""
    path = run.path("progress", f"{name}.jsonl")
    show = (lambda event: None) if quiet else (lambda event: log(f"    {event['message']}"))
    with environ(progress.ENV, str(path)), progress.Follow(path, show) as follow:
        yield follow


def run_chain(params_file: str | None, overrides: list[str] | None = None, out: str | None = None,
              log=print, notebooks=NOTEBOOKS, force: bool = False, quiet: bool = False,
              notebooks_folder: str | Path | None = None) -> RunFolder:
    """Run ``notebooks`` into the run folder. A notebook that completed before with the same
    digest (its params and everything before it unchanged) is reused, unless ``force``: so a
    re-run after a failure starts at the failed notebook. Each notebook's progress lines
    (epochs, trials, resume, skipped files) go to ``log`` as they happen, unless ``quiet``."""
    params = P.load(params_file, overrides)
    run = RunFolder(out or Path("reports") / params["name"])
    preflight(params, run)
    with run_lock(run, log):
        _run_notebooks(run, params, notebooks, force, log, quiet,
                       nb_dir=Path(notebooks_folder).resolve() if notebooks_folder else None)
    return run


def report(run_dir: str | Path, log=print) -> RunFolder:
    """``lmkit report RUN``: rebuild a run folder's figures (05_figures) and pages from what it
    holds now, running no other stage. After a notebook ran outside ``lmkit run`` (papermill,
    JupyterLab), the folder's outputs differ from what ``run.json`` recorded: the stages whose
    outputs, params or code changed are named in the log and on the page."""
    run = RunFolder(run_dir)
    for f in (run.params, run.metrics):
        if not f.exists():
            raise FileNotFoundError(f"{f}: missing; {run.root} is not a finished run (lmkit run it first)")
    params = P.load(run.params)
    info_file = run.path("run.json")
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    nb_dir = cells.notebooks_dir()
    outside = {}
    for name in NOTEBOOKS[:-1]:
        why = reuse.changes(info.get("stages", {}).get(name), run, params, name, nb_dir / f"{name}.ipynb")
        if why:
            outside[name] = "; ".join(why[:3])
            log(f"{name}: changed since lmkit run recorded it: {outside[name]}")
    with run_lock(run, log):
        _run_notebooks(run, params, ("05_figures",), True, log, index=False)
        info = json.loads(info_file.read_text())
        write_json({**info, "changed_outside": outside}, info_file)
        from .report import write_index

        write_index(run)
    log(f"report: {run.index}")
    return run


def params_changes(before: dict, after: dict) -> list[str]:
    """``key: old -> new`` for every params key whose value differs between two params."""
    old, new = P.flatten(before), P.flatten(after)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]


def run_stages(run: RunFolder, params: dict, notebooks, log=print, quiet: bool = False) -> None:
    """Run (or reuse) ``notebooks`` of the chain on a run folder whose earlier stages' outputs are
    there: what the ablation does for each of its sub-runs (no lock, no report page)."""
    _run_notebooks(run, params, notebooks, False, log, quiet, index=False)


def _run_notebooks(run: RunFolder, params: dict, notebooks, force: bool, log, quiet: bool = False,
                   nb_dir: Path | None = None, index: bool = True) -> None:
    if run.params.exists():  # what the folder last ran with (a notebook run by hand records its knobs there)
        try:
            changed = params_changes(P.load(run.params), params)
        except P.ParamsError:
            changed = []
        if changed:
            log(f"params differ from the run folder's params.yaml (the last run, or a notebook run by hand): "
                f"{'; '.join(changed)}")
    P.dump(params, run.params)
    nb_dir = nb_dir or cells.notebooks_dir()
    info_file = run.path("run.json")
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    timings = info.get("timings_s", {})
    stages = dict(info.get("stages", {}))
    reusing = not force
    log(f"run folder {run.root}")
    if force and NOTEBOOKS[0] in notebooks:  # --force redoes preparation too, not only the notebook
        for split in ("train", "test"):
            cache = run.cache_dir(params["data"]["cache_dir"]) / split
            if cache.exists():
                shutil.rmtree(cache)
                log(f"--force: removed the prepared cache {cache}")
    with this_python_kernel() as kernel, environ(cells.ENV, str(nb_dir)):
        import papermill as pm

        for name in notebooks:
            source = nb_dir / f"{name}.ipynb"
            output = run.path("notebooks", f"{name}.ipynb")
            output.parent.mkdir(parents=True, exist_ok=True)
            if reusing:
                why = reuse.changes(stages.get(name), run, params, name, source)
                if not why and not output.exists():  # the executed notebook itself is gone
                    why = [f"{output} is missing"]
                if not why:
                    log(f"{name}: reusing the earlier output (its code, the params it read, the lmkit source it "
                        "imported, its data and outputs are unchanged)")
                    continue
                if name in stages:
                    log(f"{name}: running it again: {'; '.join(why[:8])}{' ...' if len(why) > 8 else ''}")
            elif name in stages:
                log(f"{name}: running it again ({'--force' if force else 'a stage before it ran again'})")
            reusing = False  # everything after a re-run notebook runs again
            stages.pop(name, None)
            run.path("reads", f"{name}.json").unlink(missing_ok=True)
            t0 = time.perf_counter()
            log(f"{name} ...")
            try:
                with _progress_to(run, name, log, quiet):
                    pm.execute_notebook(str(source), str(output), kernel_name=kernel,
                                        parameters={"run_dir": str(run.root), "params_file": str(run.params),
                                                    "overrides": [], **NOTEBOOK_PARAMETERS.get(name, {})},
                                        cwd=str(nb_dir), progress_bar=False)
            except pm.PapermillExecutionError as e:
                export_html(output)
                write_json({**info, "timings_s": timings, "stages": stages}, info_file)
                raise ChainError(f"notebook {name} failed in cell [{e.exec_count}]: {e.ename}: {e.evalue}\n"
                                 f"  the executed notebook with the traceback: {output}") from None
            export_html(output)
            timings[name] = round(time.perf_counter() - t0, 1)
            stages[name] = reuse.record(run, params, name, source)
            write_json({**info, "timings_s": timings, "stages": stages}, info_file)
            log(f"{name} done in {timings[name]:.1f} s")
    write_json({"timings_s": timings, "stages": stages, **provenance(params)}, info_file)
    if index and run.metrics.exists():  # a chain stopped before evaluation has no report yet
        from .report import write_index

        write_index(run)
        log(f"report: {run.index}")


def main(argv: list[str] | None = None) -> int:
    from .. import __version__

    head, _, examples = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(prog="lmkit", description=head, epilog=examples,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lmkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("run", help="run the notebook chain and write the report")
    r.add_argument("params", help="params file, e.g. params/quick.yaml")
    r.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one param, e.g. -p train.epochs=3 (repeatable)")
    r.add_argument("--out", help="run folder (default reports/<name>)")
    r.add_argument("--force", action="store_true", help="re-run every notebook, even those whose outputs are current")
    r.add_argument("--quiet", action="store_true", help="no progress lines from inside the notebooks")
    a = sub.add_parser("ablate", help="after a run: train and test each recipe change (notebook 06_ablation)")
    a.add_argument("params", help="the params file of the run")
    a.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument("--out", help="the run folder (default reports/<name>)")
    w = sub.add_parser("search-worker", help="one more worker for a run's search (shared search.storage)",
                       description="Run trials of a run's hyper-parameter search on this machine until the study "
                       "has search.trials complete, then print the winner. The run folder (on storage this machine "
                       "shares) must be prepared (01_prepare done) and its params must set search.storage to a "
                       "database every worker reaches, e.g. postgresql://user@host/lmkit. Start as many as you like, "
                       "on as many machines, while the chain's 02_hpsearch runs; each trial runs exactly once.")
    w.add_argument("run", help="the run folder")
    pr = sub.add_parser("predict", help="landmarks for photos with a trained run's model and face detector",
                        description="Find the faces in each photo and their landmarks. Writes, per photo, "
                        "<stem>.pts (300-W format; more faces as <stem>_2.pts, ...) and <stem>.png (the photo "
                        "with boxes and points), and points.csv and failures.csv for all. A bad photo (unreadable, "
                        "not an image, no face found) is listed with its reason and the batch goes on. Without --out, "
                        "one photo's points go to standard output (CSV), and for several photos the .pts and "
                        "<stem>.landmarks.png go next to each photo. Exit code: "
                        "0 when at least one photo was processed, 1 when none could be.")
    pr.add_argument("model", help="a run folder (its train/model.pt) or a model file")
    pr.add_argument("photos", nargs="+", help="photos and folders of photos (searched at any depth)")
    pr.add_argument("--out", help="output folder (default: one photo's points to standard output; for several, "
                    "each photo's .pts and .landmarks.png next to it and all points to standard output)")
    pr.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                    help="onnx: the network in ONNX Runtime on the CPU, from an ONNX copy of the model file cached on "
                    "first use ($LMKIT_CACHE, else ~/.cache/lmkit); torch: in PyTorch on --device; auto (default): "
                    "onnx when onnxruntime is installed and --device is not cuda")
    pr.add_argument("--device", default="auto", help="for --backend torch: auto (CUDA when present), cpu, cuda, ...")
    pr.add_argument("--flip-test", choices=("model", "on", "off"), default="model",
                    help="average with the mirrored crop's prediction (default: as the model file says)")
    pr.add_argument("--recrop", type=int, metavar="N", help="from the face detector's box, cut the face out again "
                    "from the points found and predict again, N times (default: as the model file says)")
    pr.add_argument("--boxes", metavar="CSV", help="the faces' boxes instead of the face detector: a CSV with columns "
                    "photo,x0,y0,x1,y1 (photo pixels, one row per face); needed for a model without a box calibration "
                    "(one trained on synthetic faces)")
    pr.add_argument("--box-kind", choices=("crop", "detector"), default="crop",
                    help="what --boxes holds: crop boxes in lmkit's convention (default) or face detector boxes")
    e = sub.add_parser("export", help="write a trained run's network as TorchScript or ONNX",
                       description="The exported network takes uint8 RGB crops (B, S, S, 3) at the model's "
                       "input size S and returns points (B, K, 2) in pixels of those crops; the normalisation "
                       "is inside.")
    e.add_argument("model", help="a run folder (its train/model.pt) or a model file")
    e.add_argument("--format", required=True, choices=("torchscript", "onnx"))
    e.add_argument("--out", required=True, help="the file to write")
    pp = sub.add_parser("params", help="print a params file resolved, and how it differs from the study's settings",
                        description="The params a run would use (the file, its base: files and the defaults), then "
                        "every key whose value differs from params/paper.yaml, the study's settings.")
    pp.add_argument("params", help="params file, e.g. params/helen194-best-cpu.yaml")
    pp.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    rp = sub.add_parser("report", help="rebuild a run's figures and report pages from what its folder holds "
                        "(after a notebook ran outside lmkit run)")
    rp.add_argument("run", help="the run folder")
    sub.add_parser("results", help="the results page (RESULTS.md) from run folders and the archive of earlier rows",
                   add_help=False)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["results"]:
        from .results import main as results

        return results(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "params":
        return _params(args)
    if args.command == "predict":
        return _predict(args)
    if args.command == "export":
        return _export(args)
    if args.command == "search-worker":
        return _search_worker(args)
    if args.command == "report":
        try:
            report(args.run)
        except (ChainError, P.ParamsError, FileNotFoundError, RunInUse) as e:
            print(f"lmkit report: {e}", file=sys.stderr)
            return 1
        return 0
    try:
        t0 = time.perf_counter()
        notebooks = NOTEBOOKS if args.command == "run" else (ABLATION_NOTEBOOK,)
        run_chain(args.params, args.overrides, args.out, notebooks=notebooks, force=getattr(args, "force", True),
                  quiet=getattr(args, "quiet", False))
        print(f"finished in {time.perf_counter() - t0:.0f} s")
    except (ChainError, P.ParamsError, FileNotFoundError, RunInUse) as e:
        print(f"lmkit: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, read-only folder: one line naming the path
        print(f"lmkit: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


STUDY_PARAMS = Path(__file__).resolve().parents[2] / "params" / "paper.yaml"


def _params(args) -> int:
    import yaml

    try:
        params = P.load(args.params, args.overrides)
        study = P.load(STUDY_PARAMS)
    except (P.ParamsError, FileNotFoundError) as e:
        print(f"lmkit params: {e}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(params, sort_keys=False, allow_unicode=True).rstrip())
    ignore = {"name", "data.root"}  # where the data lie is not a difference of protocol
    changes = [c for c in params_changes(study, params) if c.split(":")[0] not in ignore]
    print(f"\n# differs from the study's settings ({STUDY_PARAMS.name}) in {len(changes)} keys (study -> this file):")
    for c in changes:
        print(f"#   {c}")
    return 0


def _search_worker(args) -> int:
    from ..search import search_worker

    try:
        search_worker(RunFolder(args.run))
    except (OSError, ValueError, RuntimeError, P.ParamsError) as err:
        print(f"lmkit search-worker: {err}", file=sys.stderr)
        return 1
    return 0


def _predict(args) -> int:
    from ..use.inference import Landmarker, predict_files, read_boxes

    try:
        flip = {"model": None, "on": True, "off": False}[args.flip_test]
        log = print if args.out else (lambda m: print(m, file=sys.stderr))  # standard output holds the points
        lm = Landmarker.load(args.model, device=args.device, flip_test=flip, recrop=args.recrop, backend=args.backend,
                             log=log)
        boxes = read_boxes(args.boxes) if args.boxes else None
        if lm.info.box_calibration is None and (boxes is None or args.box_kind == "detector"):
            raise ValueError(f"{args.model}: this model has no box calibration ({lm.info.dataset}), so a face "
                             "detector's box cannot be turned into the crop it was trained on; give each face's crop "
                             "box with --boxes FILE.csv (columns photo,x0,y0,x1,y1, photo pixels)")
        if boxes is None:
            lm.detector  # the face detector the model asks for, found before any photo: one clear error, not one per photo
        result = predict_files(lm, args.photos, args.out, boxes=boxes, box=args.box_kind, log=log,
                               progress=bool(args.out))
    except (OSError, ValueError, RuntimeError) as err:
        print(f"lmkit predict: {err}", file=sys.stderr)
        return 1
    return 0 if result["processed"] else 1


def _export(args) -> int:
    from ..use.export import export

    try:
        out = export(args.model, args.format, args.out)
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        print(f"lmkit export: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
