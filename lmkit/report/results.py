"""The results page (``make results``: ``lmkit results --out RESULTS.md``, the same bytes from any
clean checkout): one table per data set built from the archive of measured rows
(``docs/results/archive.yaml``, each row naming its commit, host and command) and, to preview
before archiving, from run folders given on the command line (each run's ``eval/metrics.json``,
``params.yaml`` and ``run.json``); then the experiments' sections (``docs/results/sections/*.md``).

Every row names the command that reproduces it: for a run folder, the params file shipped at the
run's commit whose settings equal the run's on every key its notebooks read (plus ``-p`` for the
keys that differ), else the run's own ``params.yaml`` at its commit; for an archived row, its
params file at its commit."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

import yaml

from lmkit.run import params as P
from lmkit.report.predictions import METHODS
from lmkit.run.folder import RunFolder, read_json, write_text

ROOT = Path(__file__).resolve().parents[2]
ARCHIVE = ROOT / "docs" / "results"
# keys that say where the data lie, not what they are (the data files' digests are compared by the chain)
WHERE = {"name", "data.root", "data.extra_train", "data.cache_dir"}

COLUMNS = (
    "run",
    "test MSE (px², 256 frame)",
    "test NME oc",
    "test NME io",
    "AUC@0.08 oc",
    "failure@0.10 oc",
    "own detector box: NME oc",
    "best val MSE (px²)",
    "chain (min)",
    "host",
    "reproduce",
)


class ResultsError(ValueError):
    pass


def keys_read(info: dict) -> dict:
    """Every params key a run's notebooks read, with its value (``run.json``'s stage records);
    a section read whole counts as each of its keys."""
    read = {}
    for stage in info.get("stages", {}).values():
        for k, v in (stage.get("params") or {}).items():
            read.update(P.flatten(v, f"{k}.") if isinstance(v, dict) else {k: v})
    if read.get("search.enabled") is False:  # a disabled search's budget decides nothing
        read = {
            k: v for k, v in read.items() if not k.startswith("search.") or k == "search.enabled"
        }
    return {
        k: v
        for k, v in read.items()
        if k not in WHERE
        and k.split(".")[-1] not in P.NOT_RESULTS
        and not P.MOVED.get(k, k).startswith("system.")
    }


@contextmanager
def params_at(commit: str, root: Path | None = None):
    """The folder of shipped params files as they were at ``commit`` (written from git into a
    temporary folder, removed afterwards), or ``root / "params"`` when the commit is the checkout's
    own, is not recorded, or is not in this repository (a shallow clone, no git)."""

    root = root or ROOT

    def git(*args) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True)

    try:
        full = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}") if commit else None
        head = git("rev-parse", "HEAD")
    except OSError:
        full = None
    if not full or full.returncode or full.stdout == head.stdout:
        yield root / "params"
        return
    sha = full.stdout.decode().strip()
    names = git("ls-tree", "-r", "-z", "--name-only", sha, "params").stdout.decode()
    with tempfile.TemporaryDirectory(prefix="lmkit-params-") as tmp:
        for name in filter(None, names.split("\0")):
            (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / name).write_bytes(git("show", f"{sha}:{name}").stdout)
        yield Path(tmp) / "params"


def _comparable(key: str, value):
    """A value as two params compare it: a path by its last part (a shipped file and a run folder
    resolve ``${LMKIT_DATA:-..}`` from different places), anything else as it is."""
    if key in P.PATH_KEYS and isinstance(value, str):
        return Path(value).name
    if key in P.PATH_KEYS and isinstance(value, list):
        return [Path(v).name if isinstance(v, str) else v for v in value]
    return value


def reproduce(
    run: RunFolder, info: dict, params_dir: Path | None = None, name: str | None = None
) -> str:
    """The command that makes this run folder again at its commit: the params file shipped at that
    commit (``params_dir`` instead, when given) that differs from the run in the fewest keys its
    notebooks read (at most three, given with ``-p``), else the run's own ``params.yaml``."""
    read = keys_read(info)
    commit = (info.get("git_commit") or "")[:7]
    best = None
    with params_at(commit) if params_dir is None else nullcontext(params_dir) as folder:
        for file in sorted(folder.glob("*.yaml")):
            try:
                candidate = P.flatten(P.load(file))
            except (P.ParamsError, OSError):
                continue
            differ = {
                k: v
                for k, v in read.items()
                if _comparable(k, candidate.get(k, object())) != _comparable(k, v)
            }
            if best is None or len(differ) < len(best[1]):
                best = (file.name, differ)
    name = name or P.load(run.params).name
    out = "" if run.root.name == name else f" --out reports/{run.root.name}"
    if best is not None and len(best[1]) <= 3:
        file, differ = best
        over = "".join(
            f" -p {k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in sorted(differ.items())
        )
        return f"lmkit run params/{file}{over}{out}"
    at = f"git checkout {commit} && " if commit else ""
    return f"{at}lmkit run reports/{run.root.name}/params.yaml --out reports/{run.root.name}-again"


def _host(info: dict) -> str:
    host = info.get("host")
    if isinstance(host, dict):
        cpu = f"{host.get('cpu', '?')}, {host.get('cores', '?')} cores, {host.get('isa', '?')}"
        return f"{host['gpu']} ({cpu})" if host.get("gpu") else cpu
    device = str(info.get("device", "not recorded"))
    cores = re.fullmatch(r"cpu \((\d+) cores\)", device)
    return (
        f"{cores.group(1)} cores, CPU type not recorded"
        if cores
        else f"{device} (CPU type not recorded)"
    )


def _group(params: P.Params) -> str:
    d = params.data
    return "synthetic" if d.source == "synthetic" else Path(d.root).name


def run_row(folder: str | Path, params_dir: Path | None = None) -> dict:
    """One row of the results page from a finished run folder."""
    run = RunFolder(folder)
    for f in (run.params, run.path("run.json"), run.metrics):
        if not f.exists():
            raise ResultsError(f"{run.root}: not a finished run folder ({f.name} is missing)")
    params, info = P.load(run.params), read_json(run.path("run.json"), "lmkit run")
    m = read_json(run.metrics, "04_evaluate")
    model, box = (
        m["methods"].get(METHODS["model"], {}),
        m["methods"].get(METHODS["model_detector"], {}),
    )
    return {
        "group": _group(params),
        "dataset": m.get("dataset", "?"),
        "run": params.name,
        "folder": str(run.root),
        "comparable": bool(m.get("comparable_to_paper")),
        "test": {
            "mse": model.get("mse_mean"),
            "nme_oc": model.get("nme_oc_mean"),
            "nme_io": model.get("nme_io_mean"),
            "auc_oc": model.get("auc_oc@0.08"),
            "fail_oc": model.get("fr_oc@0.10"),
        },
        "own_box": {"nme_oc": box.get("nme_oc_mean"), "recrop": m.get("recrop", 0)}
        if box
        else None,
        "val": {"mse": m.get("best_val_mse")},
        "faces": {"test": m.get("n_test"), "val": m.get("n_val"), "train": m.get("n_train")},
        "chain_min": sum(info.get("timings_s", {}).values()) / 60,
        "host": _host(info),
        "commit": (info.get("git_commit") or "")[:7],
        "command": reproduce(run, info, params_dir, params.name),
        "source": f"run folder `{run.root.name}`, commit `{(info.get('git_commit') or 'not recorded')[:7]}`",
        "ablation": run.path("ablation", "ablation.csv")
        if run.path("ablation", "ablation.csv").exists()
        else None,
    }


def load_archive(archive: Path = ARCHIVE) -> dict:
    file = archive / "archive.yaml"
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ResultsError(f"{file}: {e}") from None
    for i, row in enumerate(data.get("rows", [])):
        missing = [k for k in ("group", "run", "commit", "command", "host", "test") if k not in row]
        if missing:
            raise ResultsError(
                f"{file}: row {i + 1} ({row.get('run', '?')}) lacks {', '.join(missing)}"
            )
    return data


def _num(v, fmt: str) -> str:
    """A number as the page shows it; an archived value written as a string keeps its digits."""
    return "–" if v is None else v if isinstance(v, str) else format(v, fmt)


def _cells(row: dict) -> list[str]:
    t, box, val = row["test"], row.get("own_box") or {}, row.get("val") or {}
    frame = row.get("nme_frame")
    nme = lambda v: _num(v, ".4f") + (f" ({frame})" if frame and v is not None else "")
    box_cell = (
        "–"
        if not box or box.get("nme_oc") is None
        else nme(box["nme_oc"]) + (f", {box['recrop']} re-crops" if box.get("recrop") else "")
    )
    fail = t.get("fail_oc")
    source = row.get("source") or f"commit `{row['commit']}`"
    return [
        f"**{row['run']}**" + (f": {row['what']}" if row.get("what") else "") + f" ({source})",
        _num(t.get("mse"), ".1f"),
        nme(t.get("nme_oc")),
        nme(t.get("nme_io")),
        _num(t.get("auc_oc"), ".3f"),
        "–" if fail is None else f"{100 * fail:.1f}%",
        box_cell,
        _num(val.get("mse"), ".1f"),
        _num(row.get("chain_min"), ".1f"),
        row["host"],
        f"`{row['command']}`",
    ]


HOSTS = {
    "amd-avx2": "2-core AMD EPYC, AVX2 (no native bfloat16): float32",
    "intel-amx": "2-core Intel Xeon, AVX-512 BF16 and AMX: bfloat16",
}
OFFICIAL_TITLE = (
    "Helen, 194 points: Helen's official test split (330 faces), measured independently"
)


def load_official(archive: Path = ARCHIVE) -> dict:
    """``official-test.yaml``: rows measured on Helen's 330 official test faces, which the
    development data does not hold (none, when the file is not there)."""
    file = archive / "official-test.yaml"
    if not file.exists():
        return {}
    try:
        return yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as e:
        raise ResultsError(f"{file}: {e}") from None


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def official_table(official: dict) -> list[str]:
    """The official test split's rows (NME in percent), then what was published with Helen's
    2,000 training photos (the classical methods' NME, the study's MSE), in one table."""
    out = [
        "| run | training photos | NME io (%) | NME oc (%) | own detector box: NME io / oc (%) | "
        "MSE (px², 256 frame) | minutes | host | with Helen's release |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in official.get("rows", []):
        t, box = r.get("test", {}), r.get("own_box") or {}
        minutes = r.get("chain_min", r.get("train_min"))
        what = "chain" if "chain_min" in r else "training"
        own = f"{_pct(box.get('nme_io'))} / {_pct(box.get('nme_oc'))}" if box else "–"
        command = f"`{r['command'].replace('HELEN', 'PATH/TO/HELEN')}`" if r.get("command") else "–"
        out.append(
            f"| **{r['run']}** ({r['commit'] if r.get('commit') else 'dlib 20.0'}) | "
            f"{r.get('training_photos', '–')} | {_pct(t.get('nme_io'))} | {_pct(t.get('nme_oc'))} | "
            f"{own} | {_num(t.get('mse'), '.1f')} | "
            + ("–" if minutes is None or not r.get("host") else f"{minutes:.1f} ({what})")
            + f" | {r.get('host') or 'not recorded'} | {command} |"
        )
    for p in official.get("published", []):
        out.append(
            f"| {p['method']}, as published | 2,000 | {_pct(p.get('nme_io'))} | – | – | "
            f"{_num(p.get('mse'), '.2f')} | – | – | – |"
        )
    return out


def official_section(official: dict) -> list[str]:
    if not official.get("rows"):
        return []
    hosts = sorted({r["host"] for r in official["rows"] if r.get("host")})
    return [
        f"## {OFFICIAL_TITLE}",
        "",
        "Helen's 330 official test faces (the study's test set) with Helen's own 194 points, which the "
        "development data does not hold: measured outside it, on the same crop and normalisations as "
        "every table here; `lmkit run params/helen194-best-cpu.yaml -p data.root=PATH/TO/HELEN` with "
        "Helen's release makes a row again. The test faces were never used to choose anything. "
        "ERT rows: dlib's shape-predictor trainer on the same training photos, in the box around "
        "each face's points. Hosts: " + "; ".join(f"{h} = {HOSTS.get(h, h)}" for h in hosts) + ".",
        "",
        *official_table(official),
        "",
    ]


def _table(rows: list[dict]) -> list[str]:
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return out


def _ablation(row: dict) -> list[str]:
    import pandas as pd

    t = pd.read_csv(row["ablation"])
    nme = "nme_oc_mean" if "nme_oc_mean" in t else "nme_io_mean"
    out = [
        f"### Ablation on `{row['run']}` (run folder `{Path(row['folder']).name}`, {int(t['seeds'].iloc[0])} "
        f"seeds: mean (lowest–highest))",
        "",
        f"| row | its changes | test {nme.split('_')[1]} NME (photo px) | test MSE (px², 256 frame) | "
        "best val MSE (px²) | training min per seed |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in t.iterrows():
        out.append(
            f"| {r['variant']} | {r['changes']} | {r[nme]:.4f} ({r[nme + '_min']:.4f}–{r[nme + '_max']:.4f}) | "
            f"{r['mse_mean']:.1f} | {r['best_val_mse']:.1f} | {r['train_minutes']:.1f} |"
        )
    return out + [""]


def render(
    folders: list[str | Path],
    archive: Path = ARCHIVE,
    params_dir: Path | None = None,
    command: str | None = None,
    data: dict | None = None,
) -> str:
    """The results page, markdown: run folders' rows beside the archive's, per data set, then
    the archive's sections. ``data``: the archive already loaded from ``archive``."""
    data = load_archive(archive) if data is None else data
    live = [run_row(f, params_dir) for f in folders]
    groups = data.get("groups", {})
    rows = live + data.get("rows", [])
    order = list(groups) + [g for g in dict.fromkeys(r["group"] for r in rows) if g not in groups]
    made = command or " ".join(["lmkit results", *(str(f) for f in folders)])
    out = [
        "# Results",
        "",
        f"Generated by `{made}` (`make results`) from "
        f"`{archive.relative_to(ROOT) if archive.is_relative_to(ROOT) else archive}`"
        + (f" and {len(live)} run folder(s)" if live else "")
        + ": every row names its commit, host and the command that makes it again; edit those files, not this page.",
        "",
        data.get("intro", "").strip(),
        "",
    ]
    out += official_section(load_official(archive))
    for g in order:
        members = [r for r in rows if r["group"] == g]
        if not members:
            continue
        meta = groups.get(g, {})
        out += [f"## {meta.get('title') or members[0].get('dataset', g)}", ""]
        if meta.get("text"):
            out += [meta["text"].strip(), ""]
        out += _table(members) + [""]
        notes = [
            f"- **{r['run']}** ({r.get('source') or r['commit']}): {r['note'].strip()}"
            for r in members
            if r.get("note")
        ]
        out += notes + ([""] if notes else [])
    ablations = [r for r in live if r.get("ablation")]
    if ablations:
        out += ["## Ablations in this checkout's run folders", ""]
        for r in ablations:
            out += _ablation(r)
    for section in sorted((archive / "sections").glob("*.md")):
        out += [section.read_text().strip(), ""]
    return "\n".join(out).rstrip() + "\n"


README_BEGIN = "<!-- results: made by `make results` from the rows of docs/results/archive.yaml marked readme; edit those -->"
README_END = "<!-- /results -->"


def readme_table(data: dict) -> str:
    """The README's headline table: the archive's rows marked ``readme`` (the study's published
    row first), each with its unit, data set, minutes, host and commit as the results page has them."""
    rows = sorted(
        (r for r in data.get("rows", []) if r.get("readme")), key=lambda r: not r.get("source")
    )
    out = [
        "| data set (test faces), start | run | test result | chain | host | commit |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, box = r["test"], r.get("own_box") or {}
        result = [f"MSE {_num(t['mse'], '.1f')} px²"] if t.get("mse") is not None else []
        result += [
            f"NME {_num(t[k], '.4f')} ({k[-2:]})"
            for k in ("nme_io", "nme_oc")
            if t.get(k) is not None
        ]
        if box.get("nme_oc") is not None:
            result.append(f"NME {_num(box['nme_oc'], '.4f')} (oc) from its own face detector")
        chain = "–" if r.get("chain_min") is None else f"{_num(r['chain_min'], '.1f')} min"
        out.append(
            f"| {r['readme']} | `{r['run']}` | {'; '.join(result)} | {chain} | {r['host']} | "
            f"{r.get('source') or r['commit']} |"
        )
    return "\n".join(out)


def with_readme_table(readme: str, data: dict) -> str:
    """``readme`` with its headline table (between ``README_BEGIN`` and ``README_END``) made again."""
    start, end = readme.find(README_BEGIN), readme.find(README_END)
    if start < 0 or end < start:
        raise ResultsError(
            f"README.md: no headline table between {README_BEGIN!r} and {README_END!r}"
        )
    official = load_official()
    block = readme_table(data)
    if official.get("rows"):
        block += (
            f"\n\n**{OFFICIAL_TITLE}** (NME in percent; `lmkit run ... -p data.root=PATH/TO/HELEN` "
            "with Helen's release makes a row again; RESULTS.md says how):\n\n"
            + "\n".join(official_table(official))
        )
    return readme[:start] + README_BEGIN + "\n" + block + "\n" + readme[end:]


def archive_row(row: dict, what: str = "") -> dict:
    """A run folder's row as ``docs/results/archive.yaml`` keeps it: its commit, host, numbers
    (rounded as the page shows them) and the command that makes it again at that commit."""

    def rounded(d, digits):
        return {
            k: (round(v, digits[k]) if isinstance(v, float) else v)
            for k, v in d.items()
            if v is not None
        }

    out = {
        "group": row["group"],
        "run": row["run"],
        "what": what or f"run folder `{Path(row['folder']).name}`",
        "commit": row["commit"] or "not recorded",
        "host": row["host"],
        "chain_min": round(row["chain_min"], 1),
        "test": rounded(
            row["test"], {"mse": 1, "nme_oc": 4, "nme_io": 4, "auc_oc": 3, "fail_oc": 3}
        ),
        "own_box": row["own_box"] and rounded(row["own_box"], {"nme_oc": 4, "recrop": 0}),
        "val": rounded(row["val"], {"mse": 1}),
        "command": (f"git checkout {row['commit']} && " if row["commit"] else "") + row["command"],
    }
    return {k: v for k, v in out.items() if v}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmkit results", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "runs", nargs="*", help="run folders (folders without eval/metrics.json are skipped, named)"
    )
    parser.add_argument("--out", help="write the page here (default: standard output)")
    parser.add_argument(
        "--archive", default=str(ARCHIVE), help="the archive: archive.yaml and sections/*.md"
    )
    parser.add_argument(
        "--readme", help="also make the headline table of this README again (README.md)"
    )
    parser.add_argument(
        "--rows",
        action="store_true",
        help="print the run folders' rows as archive.yaml keeps "
        "them (commit, host, numbers, command), to paste into docs/results/archive.yaml",
    )
    args = parser.parse_args(argv)
    folders = []
    for f in args.runs:
        if RunFolder(f).metrics.exists():
            folders.append(f)
        elif Path(f).is_dir():
            print(
                f"lmkit results: {f}: skipped (no eval/metrics.json: not a finished run)",
                file=sys.stderr,
            )
        else:
            print(f"lmkit results: {f}: skipped (not a run folder)", file=sys.stderr)
    if args.rows:
        try:
            rows = [archive_row(run_row(f)) for f in folders]
        except (ResultsError, P.ParamsError, OSError) as e:
            print(f"lmkit results: {e}", file=sys.stderr)
            return 1
        sys.stdout.write(yaml.safe_dump(rows, sort_keys=False, allow_unicode=True, width=120))
        return 0
    try:
        data = load_archive(Path(args.archive))
        page = render(
            folders, Path(args.archive), command=" ".join(["lmkit results", *folders]), data=data
        )
        readme = with_readme_table(Path(args.readme).read_text(), data) if args.readme else None
    except (ResultsError, P.ParamsError, OSError) as e:
        print(f"lmkit results: {e}", file=sys.stderr)
        return 1
    if readme is not None:
        write_text(readme, Path(args.readme))
    if args.out:
        write_text(page, Path(args.out))
    else:
        sys.stdout.write(page)
    return 0
