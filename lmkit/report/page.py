"""The report's front page, ``index.html``: data set, metrics table beside the mean-shape
baseline and the study's published numbers, every figure, links to the executed notebooks."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from lmkit.report.predictions import METHODS
from lmkit.report.narrative import plural
from lmkit.run.folder import FIGURES, RunFolder, write_text

# figures shown across the page's width: the six faces, and the scheme (194 numbered points need it)
WIDE_FIGURES = ("scheme", "fig5_best_worst", "fig6_saliency")
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.85em}caption{text-align:left;font-weight:bold;padding:4px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}.warn{background:#fff4d6;border:1px solid #e0b000;padding:.6em 1em}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:520px}figure img{max-width:100%}
figure.wide{display:block;max-width:1050px}figcaption{font-size:.9em;color:#555}code{background:#f3f3f3;padding:0 3px}"""

LABELS = {
    "mse_mean": "test MSE, mean (px²)",
    "mse_median": "test MSE, median (px²)",
    "nme_io_mean": "NME, mean (inter-ocular)",
    "auc_io": "AUC (inter-ocular)",
    "fr_io": "failure rate (inter-ocular)",
    "nme_oc_mean": "NME, mean (outer corners)",
    "auc_oc": "AUC (outer corners)",
    "fr_oc": "failure rate (outer corners)",
    "detected": "faces detected",
    "seconds_per_face": "time per face (s)",
}


def _styled(methods: dict, caption: str, split: str = "test"):
    """Summary rows as the report shows them: labelled columns with their units, the report's
    number formats, a dash where a method has no value (a pandas Styler)."""
    import pandas as pd

    rows = pd.DataFrame(methods).T
    label = lambda k: _label(k, split)  # noqa: E731
    formats = {
        label(k): (lambda v, k=k: _fmt(None if pd.isna(v) else v, k)) for k in rows.columns
    }  # missing: a dash
    return rows.rename(columns=label).style.format(formats).set_caption(caption)


def trials_display(trials):
    """Notebook 02's trials, best first, the rates and decays in scientific notation (a weight
    decay of 1.13e-06 is not 0.000001), the validation MSE in px² of the 256 frame.

    Used in: 02_hpsearch, "The objective"."""
    table = trials.sort_values("val_mse")
    formats = {
        "lr": "{:.3g}",
        "weight_decay": "{:.3g}",
        "val_mse": "{:.2f}",
        "duration_s": "{:.0f}",
    }
    return table.style.format(
        {k: v for k, v in formats.items() if k in table}, na_rep="–"
    ).set_caption(
        "Trials, best first: learning rate, weight decay, best validation MSE (px² of 256x256), seconds"
    )


def metrics_display(metrics: dict):
    """The test table as the report shows it.

    Used in: 04_evaluate, "The model file"."""
    return _styled(
        metrics["methods"],
        f"Test split of {metrics['dataset']}: {metrics['n_test']} images; MSE in "
        f"{metrics['mse_unit']}, NME in {metrics.get('nme_frame', 'pixels of the 300x300 crop')}",
    )


def validation_display(metrics: dict):
    """The model's two uses on the validation faces (``metrics["validation"]``), formatted as the
    test table; None for a run evaluated before they were scored.

    Used in: 04_evaluate, "The same model on the validation faces"."""
    v = metrics.get("validation")
    if not v:
        return None
    return _styled(
        v["methods"],
        f"Validation split of {metrics['dataset']}: {v['faces']} images, without the bias "
        f"correction (it was fitted on them); MSE in {metrics['mse_unit']}, NME in {metrics.get('nme_frame')}",
        "validation",
    )


def protocol_table(metrics: dict):
    """The run's protocol beside the study's, aspect by aspect (``lmkit.report.protocol``), and under
    it the two MSEs, as tables for a notebook.

    Used in: 04_evaluate, "Beside the study"."""
    import pandas as pd

    rows = pd.DataFrame(metrics["protocol"]).set_index("aspect")
    rows["same"] = rows["same"].map({True: "same", False: "differs", None: "about"})
    return rows, pd.DataFrame(mse_beside_study(metrics)).set_index("MSE (px² of the 256x256 input)")


def mse_beside_study(m: dict) -> list[dict]:
    """The study's test and best validation MSE beside the run's."""
    model = m["methods"][METHODS["model"]]
    return [
        {
            "MSE (px² of the 256x256 input)": "test",
            "study": m["paper"]["test_mse"],
            "this run": round(model["mse_mean"], 2),
        },
        {
            "MSE (px² of the 256x256 input)": "best validation",
            "study": m["paper"]["best_val_mse"],
            "this run": round(m["best_val_mse"], 2),
        },
    ]


def _label(key: str, split: str = "test") -> str:
    stem, _, threshold = key.partition("@")
    label = LABELS[stem].replace("test MSE", f"{split} MSE")
    return f"{label} @{threshold}" if threshold else label


def _fmt(v, key: str) -> str:
    if v is None:
        return "–"
    if key == "seconds_per_face":
        return f"{v:.4f}"
    return (
        f"{v:.2f}" if key.startswith("mse") else f"{v:.4f}" if key.startswith("nme") else f"{v:.3f}"
    )


def _best_validation(m: dict) -> str:
    """The training loop's best validation MSE; beside the study's only where the data are the
    study's; for a final model (``data.final``), what its validation faces are."""
    if m.get("final"):
        return (
            f"<b>Final model</b> (<code>data.final</code>): trained on the training and validation faces together "
            f"({m['n_train']} faces) for {plural(m['epochs'], 'epoch')}, the last epoch kept; its validation "
            f"numbers (best {m['best_val_mse']:.2f} px²) are on faces it trained on, not held out."
        )
    line = f"Best validation MSE {m['best_val_mse']:.2f} px² at epoch {m['best_epoch']}"
    if m.get("comparable_to_paper"):
        line += f" (study: {m['paper']['best_val_mse']:.2f}, validated on augmented copies of training images)"
    return line + "."


def _search(m: dict) -> str:
    b = m.get("search_budget", {})
    if not b.get("enabled", True):
        return "disabled"
    return f"{plural(b.get('trials'), 'trial')} of {plural(b.get('epochs_per_trial'), 'epoch')}"


def _optimizer(m: dict) -> str:
    """The optimiser the run trained with (the model file's record), as its name is written."""
    return {"adam": "Adam", "adamw": "AdamW"}.get(
        m.get("model_file", {}).get("optimizer"), "the optimiser's"
    )


def _source(hp: dict) -> str:
    source = str(hp.get("source", ""))
    return (
        "fixed in the params; the search was off"
        if source.startswith("params")
        else f"chosen by {source}"
    )


def _view(m: dict) -> str:
    """Where the network looked, and whether its points were corrected, in words."""
    view = m.get("view", 1.0)
    looked = (
        "the whole crop (as the study)"
        if view == 1.0
        else f"the centre {view:.1%} of each crop (the mean training crop)"
    )
    box = "eye and mouth centres" if m.get("crop_box") == "eyes-mouth" else "landmark box"
    corrected = (
        "each point's mean validation error subtracted (model.bias_correction)"
        if m.get("bias_correction")
        else "no bias correction"
    )
    return f"The network saw {looked}, cut around the {box}; {corrected}."


def _table(methods: dict, caption: str, split: str = "test") -> str:
    """The methods' rows as tables narrow enough for the page: the MSE and times, then one table
    per NME normalisation (inter-ocular, outer corners), each column labelled with the split."""
    keys = list(dict.fromkeys(k for row in methods.values() for k in row))
    parts = (
        ("MSE (px², 256 frame) and time", [k for k in keys if "_io" not in k and "_oc" not in k]),
        ("NME normalised by the eye centres (inter-ocular)", [k for k in keys if "_io" in k]),
        ("NME normalised by the outer eye corners", [k for k in keys if "_oc" in k]),
    )
    tables = []
    for what, part in parts:
        if not part:
            continue
        head = "".join(f"<th>{html.escape(_label(k, split))}</th>" for k in part)
        rows = "".join(
            f"<tr><td>{html.escape(method)}</td>"
            + "".join(f"<td>{_fmt(row.get(k), k)}</td>" for k in part)
            + "</tr>"
            for method, row in methods.items()
        )
        tables.append(
            f"<table><caption>{caption}: {what}</caption><tr><th>method</th>{head}</tr>{rows}</table>"
        )
    return "".join(tables)


def metrics_html(m: dict) -> str:
    return _table(
        m["methods"],
        f"Test split of {html.escape(m['dataset'])}: {m['n_test']} images ({m['scheme']})",
    )


def validation_html(m: dict) -> str:
    """Both uses of the model on the validation faces: what recipes are chosen by."""
    v = m.get("validation")
    if not v:
        return ""
    held = (
        "trained on too: a final model, <code>data.final</code>"
        if m.get("final")
        else "never trained on"
    )
    return (
        f"<p>On the validation split ({v['faces']} faces of the training photos, {held}), scored as the "
        "test split but without the bias correction, which was fitted on these faces. Recipes are compared on "
        "these numbers; the test split is scored once per final candidate. "
        + _two_validation_mses(m)
        + "</p>"
        + _table(
            v["methods"],
            f"Validation split of {html.escape(m['dataset'])}: {v['faces']} images",
            "validation",
        )
    )


def _two_validation_mses(m: dict) -> str:
    """Why this table's validation MSE and the training loop's best one are two numbers, said only
    when they differ (as rounded on the page)."""
    row = m["validation"]["methods"].get(METHODS["model"], {})
    mse, best = row.get("mse_mean"), m.get("best_val_mse")
    if mse is None or best is None:
        return ""
    if f"{mse:.2f}" == f"{best:.2f}":
        return (
            f"Its MSE ({mse:.2f} px²) is the best validation MSE under \u201cData and budget\u201d: the model "
            "file is the training loop's best epoch, scored the same way."
        )
    return (
        f"Its MSE ({mse:.2f} px²) differs from the best validation MSE under \u201cData and budget\u201d "
        f"({best:.2f} px²): that one is the training loop's, at each epoch, without the flip test; this table "
        "scores the model file as it is used (with the flip test when it is on)."
    )


def study_html(m: dict) -> str:
    """The study's numbers where they belong. On Helen's 194 points: the protocol table (the
    study's and the run's value of every aspect that moves the MSE), and directly under it the
    study's test and validation MSE beside the run's. On other data: one reference line,
    outside the results table."""
    from lmkit.report.protocol import summary

    paper = m["paper"]
    if not m["comparable_to_paper"] or "protocol" not in m:
        return (
            f"<p><small>For reference only, not comparable (other data): the study reported a test MSE of "
            f"{paper['test_mse']} px² (256x256 input) on {html.escape(paper['dataset'])}.</small></p>"
        )
    mark = {True: "same", False: "<b>differs</b>", None: "about"}
    rows = "".join(
        f"<tr><td>{html.escape(r['aspect'])}</td><td>{html.escape(r['study'])}</td>"
        f"<td>{html.escape(r['run'])}</td><td>{mark[r['same']]}</td></tr>"
        for r in m["protocol"]
    )
    mse = "".join(
        f"<tr><td>{r['MSE (px² of the 256x256 input)']}</td><td>{r['study']:.2f}</td><td>{r['this run']:.2f}</td></tr>"
        for r in mse_beside_study(m)
    )
    return (
        f"<h2>Beside the study</h2><p>The study's data set, so its numbers can stand beside this run's, as far as "
        f"the protocols agree: {html.escape(summary(m['protocol']))}. Each difference moves the MSE: a smaller "
        "margin makes the face larger in the 256 frame (a larger MSE for the same relative error); ImageNet "
        "weights, more photos and epochs lower it; validation on copies of training photos lowers the "
        "validation MSE only.</p>"
        "<table><caption>Protocol: the study's and this run's</caption><tr><th>aspect</th><th>study</th>"
        f"<th>this run</th><th></th></tr>{rows}</table>"
        "<table><caption>MSE, px² of the 256x256 input, averaged over points and x, y</caption>"
        f"<tr><th></th><th>study (330 test faces)</th><th>this run ({m['n_test']} test faces)</th></tr>{mse}</table>"
    )


def ablation_html(run: RunFolder) -> str:
    f = run.root / "ablation" / "ablation.csv"
    if not f.exists():
        return ""
    import pandas as pd

    t = pd.read_csv(f)
    nme = "nme_oc_mean" if "nme_oc_mean" in t.columns else "nme_io_mean"
    columns = [
        (nme, _label(nme)),
        ("mse_mean", "test MSE, mean (px²)"),
        *[
            (k, _label(k))
            for k in t.columns
            if k.startswith(("auc_", "fr_"))
            and not k.endswith(("_min", "_max"))
            and k.split("_")[1].startswith(nme.split("_")[1])
        ],
        ("best_val_mse", "best validation MSE (px²)"),
        ("train_minutes", "training (min, wall clock)"),
    ]

    def cell(r, k):
        lo, hi = r[f"{k}_min"], r[f"{k}_max"]
        fmt = (
            (lambda v: f"{v:.1f}")
            if k == "train_minutes"
            else (lambda v: _fmt(v, "mse" if "mse" in k else k))
        )
        return f"<td>{fmt(r[k])} <small>({fmt(lo)}–{fmt(hi)})</small></td>"

    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    rows = "".join(
        f"<tr><td>{html.escape(str(r['variant']))}<br><small>{html.escape(str(r['changes']))}</small></td>"
        f"<td>{int(r['seeds'])}</td>" + "".join(cell(r, k) for k, _ in columns) + "</tr>"
        for _, r in t.iterrows()
    )
    return (
        "<h2>Ablation: the study's recipe and each change</h2><p>Each row adds the changes named under it to "
        "the row above; the first row is the study's recipe whatever params the run used. Same data, split, model, "
        "epochs and searched hyper-parameters for every row; each row is trained once per seed: the mean over "
        "the seeds, and in brackets the lowest and highest. Test metrics on the run's test split; the "
        "validation MSE is the one recipes are chosen by. Pixels of the 256x256 frame.</p>"
        f"<table><tr><th>variant</th><th>seeds</th>{head}</tr>{rows}</table>"
    )


def dlib_html(m: dict) -> str:
    """What to know about the classical peers' rows, where there are any; else why they did not run."""
    ert = f"<p>ERT trained on this run's faces: {html.escape(m['ert'])}.</p>" if "ert" in m else ""
    if not any(k.startswith("dlib") for k in m["methods"]):
        return ert + f"<p>dlib peer: {html.escape(m['peer'])}.</p>"
    return ert + (
        f"<p class='warn'><b>About dlib's rows.</b> Peer: {html.escape(m['peer'])}. dlib's model was trained on "
        "300-W, whose training part includes Helen's photos, so on Helen-derived test photos its numbers are "
        "optimistic: where its rows beat ours, part of the margin is that it has seen these faces' siblings in "
        "training.</p>"
    )


def skipped_html(m: dict) -> str:
    skipped = [(split, s) for split, items in m.get("skipped", {}).items() for s in items]
    unannotated = [(split, f) for split, files in m.get("unannotated", {}).items() for f in files]
    out = "<p>No sample was skipped.</p>"
    if skipped:
        items = "".join(f"<li>{split}: {html.escape(s['reason'])}</li>" for split, s in skipped)
        out = f"<p><b>{len(skipped)} bad samples were skipped</b> (data.on_bad_sample: skip):</p><ul>{items}</ul>"
    if unannotated:
        items = "".join(f"<li>{split}: {html.escape(f)}</li>" for split, f in unannotated)
        out += f"<p><b>{len(unannotated)} images have no annotation beside them</b> and were not used:</p><ul>{items}</ul>"
    return out


def repository_root(run: RunFolder) -> Path | None:
    """The checkout a run folder lies in (the folder holding ``params/`` and ``notebooks/`` above
    it); None for a run folder outside any checkout."""
    for parent in run.root.resolve().parents:
        if (parent / "params").is_dir() and (parent / "notebooks").is_dir():
            return parent
    return None


def provenance_summary(info: dict) -> str:
    """One line of a run's record: its commit, host, torch and the chain's minutes."""
    host = info.get("host") or {}
    cpu = host.get("gpu") or host.get("cpu") if isinstance(host, dict) else None
    versions = info.get("packages") or {}
    minutes = sum((info.get("timings_s") or {}).values()) / 60
    parts = [
        f"commit {str(info['git_commit'])[:7]}"
        if info.get("git_commit")
        else "commit not recorded",
        f"host {cpu}" if cpu else "host not recorded",
        f"torch {versions['torch']}" if versions.get("torch") else "",
        f"chain {minutes:.1f} min" if minutes else "",
    ]
    return "; ".join(p for p in parts if p)


def write_index(run: RunFolder) -> None:
    m = json.loads(run.metrics.read_text())
    info = json.loads(run.path("run.json").read_text()) if run.path("run.json").exists() else {}
    name = run.root.name
    warn = (
        ""
        if m["comparable_to_paper"]
        else (
            f"<p class='warn'><b>Not comparable to the study.</b> These results are on {html.escape(m['dataset'])}, "
            f"not on the study's Helen 194-point data; the study's number is given below the results only for reference.</p>"
        )
    )
    figures = []
    for key, caption in FIGURES.items():
        if run.figure(key).exists():
            wide = " class='wide'" if key in WIDE_FIGURES else ""
            figures.append(
                f"<figure{wide}><a href='figures/{key}.png' title='the full-size figure'>"
                f"<img src='figures/{key}.png' alt='{html.escape(caption)}'></a>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        else:
            figures.append(f"<p>{html.escape(caption)}: not produced in this run.</p>")
    notebooks = " · ".join(
        f"<a href='notebooks/{p.stem}.html'>{p.stem}</a>"
        for p in sorted(run.root.joinpath("notebooks").glob("*.html"))
    )
    hp = m["hparams"]
    model_row = m["methods"].get("ResNet18 (this run)", {})
    base_row = m["methods"].get("mean shape (baseline)", {})
    worse = (
        ""
        if not base_row or model_row.get("nme_io_mean", 0) < base_row.get("nme_io_mean", 0)
        else (
            f"<p class='warn'><b>This model is no better than the mean shape</b> (NME {model_row['nme_io_mean']:.4f} "
            f"against {base_row['nme_io_mean']:.4f}, inter-ocular): it has not learned from the images. Train longer, "
            "or check the learning rate and the data.</p>"
        )
    )
    links = " · ".join(
        f"<a href='{href}'>{label}</a>"
        for href, label in (
            ("params.yaml", "params.yaml (the run's params)"),
            ("train/history.csv", "history.csv (loss per epoch)"),
            ("eval/metrics.json", "metrics.json"),
            ("train/model.pt", "model.pt (the model file)"),
            ("run.json", "run.json (provenance)"),
        )
        if run.root.joinpath(href).exists()
    )
    params_text = run.params.read_text() if run.params.exists() else ""
    commit = info.get("git_commit")
    # relative to the repository root (where lmkit run is run), never this machine's absolute paths
    root = repository_root(run)  # a folder outside any checkout is named as the user put it
    folder = Path(os.path.relpath(run.root.resolve(), root)) if root else run.root
    reproduce = (
        f"git checkout {commit}\n" if commit else ""
    ) + f"lmkit run {folder / 'params.yaml'} --out {folder}-again"
    outside = info.get("changed_outside", {})
    stale = (
        ""
        if not outside
        else (
            "<p class='warn'><b>Changed outside <code>lmkit run</code></b> since it recorded them: "
            + "; ".join(f"{html.escape(k)} ({html.escape(v)})" for k, v in outside.items())
            + ". <code>lmkit report</code> rebuilt the figures and this page from what the run folder holds now; the "
            "notebook pages show the chain's own runs. <code>lmkit run</code> runs those stages again.</p>"
        )
    )
    body = f"""<!doctype html><html><head><meta charset='utf-8'><title>lmkit report: {html.escape(name)}</title>
<style>{CSS}</style></head><body>
<h1>Facial landmarks with ResNet18: run <code>{html.escape(name)}</code></h1>
{warn}{worse}{stale}
<p>Files: {links}</p>
<div class='warn' style='background:#eef6ff;border-color:#7aa7d8'><b>Reproduce this run</b> (same params, seed and code):
<pre>{html.escape(reproduce)}</pre></div>
<h2>Data and budget</h2>
<p>Data set: <b>{html.escape(m["dataset"])}</b>; scheme {m["scheme"]}; {m["n_train"]} training,
{m["n_val"]} validation ({m["split_protocol"]} split), {m["n_test"]} test images. Input {m["input_size"]}x{m["input_size"]},
{plural(m["epochs"], "epoch")}; search {_search(m)}; {_optimizer(m)} learning rate {hp["lr"]:.2e}, weight decay {hp["weight_decay"]:.2e} ({html.escape(_source(hp))}).
Training took {m["train_seconds"] / 60:.1f} min. {_best_validation(m)}</p>
{skipped_html(m)}
<h2>Test metrics</h2>
<p>MSE in {html.escape(m["mse_unit"])}, averaged over points and x, y (the study's unit).
NME = mean point-to-point error divided by {html.escape("; or by ".join(m["nme_units"].values()))},
computed in {html.escape(m.get("nme_frame", "pixels of the 300x300 crop"))}, as are the AUC and the failure rate.
AUC is the area under the CED up to the threshold, divided by it; the failure rate is the fraction of
faces above it. Times per face are wall-clock on the machine of the run.</p>
<p>ResNet18 from its face detector's box (the way <code>lmkit predict</code> runs it): {html.escape(m.get("detector_box", "not run"))}.
Flip test: {"on" if m.get("flip_test") else "off"}. {_view(m)}</p>
{dlib_html(m)}
{metrics_html(m)}
{validation_html(m)}
{study_html(m)}
{ablation_html(run)}
<h2>Figures</h2>
{"".join(figures)}
<h2>Notebooks</h2><p>{notebooks}</p>
<h2>Params</h2><details><summary><a href='params.yaml'>params.yaml</a> (click to show the resolved params)</summary><pre>{html.escape(params_text)}</pre></details>
<h2>Provenance</h2><details><summary>{html.escape(provenance_summary(info))} (click to show <a href='run.json'>run.json</a>)</summary><pre>{html.escape(json.dumps(info, indent=2))}</pre></details>
</body></html>"""
    write_text(body, run.index)
