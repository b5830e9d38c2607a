"""The papermill runner: ``run_chain`` executes the notebooks of a run in order (each in the
same Python environment, reusing a stage whose inputs and code are unchanged), exports each to
HTML with nbconvert and writes the report's index.html; ``report`` rebuilds the pages after a
notebook ran by hand. A failing notebook stops the chain with a message naming the notebook and
the failing cell. The ``lmkit`` command that calls it is ``lmkit.cli``.
"""

from __future__ import annotations

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

from lmkit.study import cells
from lmkit.run import params as P
from lmkit.run import progress
from lmkit.run.folder import RunFolder, write_json, write_text
from lmkit.chain import reuse
from lmkit.chain import stages
from lmkit.chain.lock import environ, run_lock

NOTEBOOKS = stages.NOTEBOOKS  # what lmkit run runs, in order (lmkit.stages declares each)
ABLATION_NOTEBOOK = stages.CHAIN[-1]
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
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [
                    sys.executable,
                    "-m",
                    "lmkit.chain.kernel",
                    "-f",
                    "{connection_file}",
                    "--IPKernelApp.log_level=ERROR",
                ],
                "display_name": "lmkit (this Python)",
                "language": "python",
            }
        )
    )
    try:
        with environ(
            "JUPYTER_PATH",
            os.pathsep.join(filter(None, [str(folder), os.environ.get("JUPYTER_PATH")])),
        ):
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
    nav = (
        "<nav style='font-family:system-ui,sans-serif;padding:6px 12px;background:#f3f3f3;border-bottom:1px solid #ccc'>"
        + " · ".join(links)
        + "</nav>"
    )
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, body, count=1)
    out = notebook.with_suffix(".html")
    write_text(body, out)
    return out


def provenance(params: P.Params) -> dict:
    """What a result needs to be traced and repeated."""

    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "seed": params.seed,
        "device": "cuda: " + torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({os.cpu_count()} cores)",
        "host": host(),
        "packages": {
            p: version(p) for p in ("lmkit", "torch", "torchvision", "numpy", "optuna", "papermill")
        },
    }


def host() -> dict:
    """The machine a run's times come from: CPU model, cores, the instruction set PyTorch uses
    and whether bfloat16 is native (times from an AVX2 host and an AVX-512 one differ by 2x)."""
    import torch

    from lmkit.study.model import cpu_has_bf16

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


def preflight(params: P.Params, run: RunFolder) -> None:
    """Refuse, before any notebook starts, what would fail later: a missing data folder or one
    in another layout, a device that is not there, ImageNet weights that cannot be had, a run
    folder that cannot be written."""
    d = params.data
    if d.source == "synthetic":
        n_val = max(1, round(d.synthetic_train * d.val_fraction))
        if d.synthetic_train - n_val < params.train.batch_size:
            raise ChainError(
                f"too little data: data.synthetic_train {d.synthetic_train} leaves "
                f"{d.synthetic_train - n_val} training faces after {n_val} for validation, fewer than "
                f"train.batch_size {params.train.batch_size}"
            )
    else:
        root = Path(d.root or "")
        if not d.root or not root.is_dir():
            raise ChainError(f"data.root: {root} is not a folder (data.source: {d.source})")
        missing = [f for f in LAYOUTS[d.source] if not (root / f).exists()]
        if missing:
            other = next(
                (
                    name
                    for name, files in LAYOUTS.items()
                    if name != d.source and all((root / f).exists() for f in files)
                ),
                None,
            )
            hint = f"; it looks like the {other} layout: set data.source: {other}" if other else ""
            raise ChainError(
                f"data.root: {root} is not in the {d.source} layout (missing "
                f"{', '.join(missing)}){hint}"
            )
        for extra in d.extra_train:
            if not Path(extra).is_dir():
                raise ChainError(f"data.extra_train: {extra} is not a folder")
    device = params.system.device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ChainError(
                f"system.device: {device} asked for, but this machine has no CUDA device (use auto or cpu)"
            )
    if params.system.processes > 1:
        from lmkit.chain.launch import check_devices

        try:
            check_devices(params.system.processes, device)
        except RuntimeError as e:
            raise ChainError(str(e)) from None
    if isinstance(params.model.pretrained, str) and not Path(params.model.pretrained).is_file():
        raise ChainError(
            f"model.pretrained: {params.model.pretrained}: no such file (a saved ResNet18 state "
            "dict, or true for torchvision's ImageNet weights)"
        )
    if params.model.pretrained is True:
        from lmkit.study.model import imagenet_weights

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
    """The progress events of notebook ``name`` (``lmkit.run.progress``): recorded in
    ``progress/<name>.jsonl`` of the run folder and, unless ``quiet``, each message passed to
    ``log`` as it happens. The notebook's kernel finds the file through $LMKIT_PROGRESS."""
    path = run.path("progress", f"{name}.jsonl")
    show = (lambda event: None) if quiet else (lambda event: log(f"    {event['message']}"))
    with environ(progress.ENV, str(path)), progress.Follow(path, show) as follow:
        yield follow


def run_chain(
    params_file: str | None,
    overrides: list[str] | None = None,
    out: str | None = None,
    log=print,
    notebooks=NOTEBOOKS,
    force: bool = False,
    quiet: bool = False,
    notebooks_folder: str | Path | None = None,
) -> RunFolder:
    """Run ``notebooks`` into the run folder. A notebook that completed before with the same
    digest (its params and everything before it unchanged) is reused, unless ``force``: so a
    re-run after a failure starts at the failed notebook. Each notebook's progress lines
    (epochs, trials, resume, skipped files) go to ``log`` as they happen, unless ``quiet``."""
    params = P.load(params_file, overrides)
    run = RunFolder(out or Path("reports") / params.name)
    preflight(params, run)
    with run_lock(run, log):
        _run_notebooks(
            run,
            params,
            notebooks,
            force,
            log,
            quiet,
            nb_dir=Path(notebooks_folder).resolve() if notebooks_folder else None,
        )
    return run


def report(run_dir: str | Path, log=print) -> RunFolder:
    """``lmkit report RUN``: rebuild a run folder's figures (05_figures) and pages from what it
    holds now, running no other stage. After a notebook ran outside ``lmkit run`` (papermill,
    JupyterLab), the folder's outputs differ from what ``run.json`` recorded: the stages whose
    outputs, params or code changed are named in the log and on the page."""
    run = RunFolder(run_dir)
    for f in (run.params, run.metrics):
        if not f.exists():
            raise FileNotFoundError(
                f"{f}: missing; {run.root} is not a finished run (lmkit run it first)"
            )
    params = P.load(run.params)
    info_file = run.path("run.json")
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    nb_dir = cells.notebooks_dir()
    outside = {}
    for name in NOTEBOOKS[:-1]:
        why = reuse.changes(
            info.get("stages", {}).get(name), run, params, name, nb_dir / f"{name}.ipynb"
        )
        if why:
            outside[name] = "; ".join(why[:3])
            log(f"{name}: changed since lmkit run recorded it: {outside[name]}")
    with run_lock(run, log):
        _run_notebooks(run, params, ("05_figures",), True, log, index=False)
        info = json.loads(info_file.read_text())
        write_json({**info, "changed_outside": outside}, info_file)
        from lmkit.report.page import write_index

        write_index(run)
    log(f"report: {run.index}")
    return run


def params_changes(before: dict, after: dict) -> list[str]:
    """``key: old -> new`` for every params key whose value differs between two params."""
    old, new = P.flatten(before), P.flatten(after)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]


def run_stages(run: RunFolder, params: P.Params, notebooks, log=print, quiet: bool = False) -> None:
    """Run (or reuse) ``notebooks`` of the chain on a run folder whose earlier stages' outputs are
    there: what the ablation does for each of its sub-runs (no lock, no report page)."""
    _run_notebooks(run, params, notebooks, False, log, quiet, index=False)


def _run_notebooks(
    run: RunFolder,
    params: P.Params,
    notebooks,
    force: bool,
    log,
    quiet: bool = False,
    nb_dir: Path | None = None,
    index: bool = True,
) -> None:
    if (
        run.params.exists()
    ):  # what the folder last ran with (a notebook run by hand records its knobs there)
        try:
            changed = params_changes(P.load(run.params), params)
        except P.ParamsError:
            changed = []
        if changed:
            log(
                f"params differ from the run folder's params.yaml (the last run, or a notebook run by hand): "
                f"{'; '.join(changed)}"
            )
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
            cache = run.cache_dir(params.data.cache_dir) / split
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
                    log(
                        f"{name}: reusing the earlier output (its code, the params it read, the lmkit source it "
                        "imported, its data and outputs are unchanged)"
                    )
                    continue
                if name in stages:
                    log(
                        f"{name}: running it again: {'; '.join(why[:8])}{' ...' if len(why) > 8 else ''}"
                    )
            elif name in stages:
                log(
                    f"{name}: running it again ({'--force' if force else 'a stage before it ran again'})"
                )
            reusing = False  # everything after a re-run notebook runs again
            stages.pop(name, None)
            run.path("reads", f"{name}.json").unlink(missing_ok=True)
            t0 = time.perf_counter()
            log(f"{name} ...")
            try:
                with _progress_to(run, name, log, quiet):
                    pm.execute_notebook(
                        str(source),
                        str(output),
                        kernel_name=kernel,
                        parameters={
                            "run_dir": str(run.root),
                            "params_file": str(run.params),
                            "overrides": [],
                            **NOTEBOOK_PARAMETERS.get(name, {}),
                        },
                        cwd=str(nb_dir),
                        progress_bar=False,
                    )
            except pm.PapermillExecutionError as e:
                export_html(output)
                write_json({**info, "timings_s": timings, "stages": stages}, info_file)
                raise ChainError(
                    f"notebook {name} failed in cell [{e.exec_count}]: {e.ename}: {e.evalue}\n"
                    f"  the executed notebook with the traceback: {output}"
                ) from None
            export_html(output)
            timings[name] = round(time.perf_counter() - t0, 1)
            stages[name] = reuse.record(run, params, name, source)
            write_json({**info, "timings_s": timings, "stages": stages}, info_file)
            log(f"{name} done in {timings[name]:.1f} s")
    write_json({"timings_s": timings, "stages": stages, **provenance(params)}, info_file)
    if index and run.metrics.exists():  # a chain stopped before evaluation has no report yet
        from lmkit.report.page import write_index

        write_index(run)
        log(f"report: {run.index}")
