"""The results page (lmkit results), the params files it points at, and the README's numbers."""

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lmkit.run import params as P
from lmkit.report import results
from lmkit.run.folder import RunFolder

from tests.conftest import TINY, copy_run

ROOT = Path(__file__).resolve().parents[1]


def _tables(page: str) -> list[list[str]]:
    """The data rows of the page's run tables (those with a "reproduce" column)."""
    rows, header = [], None
    for line in page.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(line) <= set("|-") and header[-1] == "reproduce":
            rows.append(cells)
    return rows


@pytest.mark.slow
def test_the_page_builds_from_a_small_run_folder_and_every_row_names_its_command(
    tiny_chain, tmp_path
):
    params_dir = tmp_path / "params"
    params_dir.mkdir()
    tiny = P.load(
        ROOT / "params" / "quick.yaml", [f"{k}={v}" for k, v in {**TINY, "seed": 1}.items()]
    )
    (params_dir / "tiny.yaml").write_text(
        yaml.safe_dump({**tiny.model_dump(), "name": "tiny-file"})
    )
    page = results.render([tiny_chain.root], params_dir=params_dir)
    rows = _tables(page)
    assert rows and all(
        re.fullmatch(
            r"`(git checkout [0-9a-f]{7} && )?(lmkit pretrain .+ && )?lmkit run .+`", r[-1]
        )
        for r in rows
    )
    mine = [r for r in rows if f"run folder `{tiny_chain.root.name}`" in r[0]]
    assert len(mine) == 1
    # the shipped file that differs from the run in the fewest keys it read, and -p for those keys
    assert (
        mine[0][-1]
        == f"`lmkit run params/tiny.yaml -p seed=0 --out reports/{tiny_chain.root.name}`"
    )
    m = yaml.safe_load((tiny_chain.metrics).read_text())
    assert (
        f"{m['methods']['ResNet18 (this run)']['mse_mean']:.1f}" == mine[0][1]
    )  # test MSE, px² of the 256 frame
    assert "cores" in mine[0][-2]  # the host
    synthetic = page.index("## Synthetic faces")
    assert page.index(mine[0][0]) > synthetic  # under its data set, which says it is not comparable
    assert "not comparable" in page[synthetic : synthetic + 200]
    # the archive's rows and sections come with it
    assert (
        "## The ablation" in page
        and "`git checkout 09452eb && lmkit run params/helen68-no-forehead-45min-cpu.yaml`" in page
    )


def test_a_run_is_made_again_from_the_params_files_of_its_own_commit(tmp_path, monkeypatch):
    """A run recorded at an older commit is compared with the params files shipped at that commit
    (the command starts with a checkout of it), not with today's; a data path counts by its folder's
    name, since the run and the file resolve ${LMKIT_DATA:-..} from different places."""

    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    (tmp_path / "params").mkdir()
    recipe = tmp_path / "params" / "recipe.yaml"
    recipe.write_text(
        "name: recipe\ndata:\n  source: 300w\n  joint_train: [../afw68]\nmodel:\n  input_size: 96\n"
    )
    git("init", "-q")
    git("add", "params")
    git("commit", "-qm", "96 px")
    old = git("rev-parse", "HEAD")
    recipe.write_text("name: recipe\ndata:\n  source: 300w\nmodel:\n  input_size: 128\n")
    git("commit", "-qam", "128 px")
    monkeypatch.setattr(results, "ROOT", tmp_path)
    info = {
        "git_commit": old,
        "stages": {
            "03_train": {
                "params": {
                    "model": {"input_size": 96},
                    "data": {"source": "300w", "joint_train": ["/elsewhere/data/afw68"]},
                }
            }
        },
    }
    run = RunFolder(tmp_path / "reports" / "recipe")
    assert results.reproduce(run, info, name="recipe") == "lmkit run params/recipe.yaml"
    # today's file (HEAD) differs from the same run in both keys
    info["git_commit"] = git("rev-parse", "HEAD")
    assert results.reproduce(run, info, name="recipe") == (
        "lmkit run params/recipe.yaml -p data.joint_train=[/elsewhere/data/afw68] -p model.input_size=96"
    )
    # a commit this repository lacks: today's files, as before
    info["git_commit"] = "0" * 40
    assert "-p model.input_size=96" in results.reproduce(run, info, name="recipe")
    with results.params_at(old) as folder:
        assert "input_size: 96" in (folder / "recipe.yaml").read_text()
    assert not folder.exists()  # the temporary copy is removed


@pytest.mark.slow
def test_a_run_no_shipped_file_describes_is_made_again_from_its_own_params(tiny_chain, tmp_path):
    info = yaml.safe_load(tiny_chain.path("run.json").read_text())
    command = results.reproduce(
        tiny_chain, info, params_dir=ROOT / "params"
    )  # quick.yaml differs in the 9 TINY keys
    assert command == (
        f"git checkout {info['git_commit'][:7]} && lmkit run reports/{tiny_chain.root.name}/params.yaml "
        f"--out reports/{tiny_chain.root.name}-again"
    )


@pytest.mark.slow
def test_an_ablation_in_a_run_folder_gets_its_table(tiny_chain, tmp_path):
    from lmkit.chain.ablation import ablation_table

    run = copy_run(tiny_chain, tmp_path / "ablated")
    runs = pd.DataFrame(
        [
            {
                "variant": v,
                "file": f"{i}.yaml",
                "seed": s,
                "mse_mean": 40.0 + i + s,
                "nme_io_mean": 0.1 - 0.01 * i + 0.001 * s,
                "best_val_mse": 50.0 - i,
                "train_minutes": 0.5,
            }
            for i, v in enumerate(("study recipe", "+ cosine"))
            for s in (0, 1)
        ]
    )
    run.path("ablation").mkdir()
    ablation_table(runs, {"study recipe": "-", "+ cosine": "train.schedule=cosine"}).to_csv(
        run.path("ablation", "ablation.csv"), index=False
    )
    page = results.render([run.root])
    assert "### Ablation on `quick`" in page
    assert (
        "| + cosine | train.schedule=cosine | 0.0905 (0.0900–0.0910) | 41.5 | 49.0 | 0.5 |" in page
    )


@pytest.mark.slow
def test_lmkit_results_writes_the_page_and_names_what_it_skips(tiny_chain, tmp_path, capsys):
    from lmkit.cli import main

    (tmp_path / "unfinished").mkdir()
    out = tmp_path / "RESULTS.md"
    assert (
        main(["results", str(tiny_chain.root), str(tmp_path / "unfinished"), "--out", str(out)])
        == 0
    )
    assert f"run folder `{tiny_chain.root.name}`" in out.read_text()
    assert "unfinished: skipped (no eval/metrics.json" in capsys.readouterr().err
    bad = tmp_path / "archive"
    (bad / "sections").mkdir(parents=True)
    (bad / "archive.yaml").write_text("rows:\n  - group: helen68\n    run: x\n")
    assert main(["results", "--archive", str(bad)]) == 1
    assert "row 1 (x) lacks commit, command, host, test" in capsys.readouterr().err


def test_the_committed_results_page_holds_every_archived_row_and_section():
    """RESULTS.md is generated; rows of run folders not in this checkout may be added, nothing
    of the archive may be missing (make results after editing docs/results/)."""
    committed = set((ROOT / "RESULTS.md").read_text().splitlines())
    fresh = results.render([]).splitlines()
    missing = [
        line for line in fresh if line not in committed and not line.startswith("Generated by")
    ]
    assert not missing, f"RESULTS.md is older than docs/results/ (make results): {missing[:3]}"


def test_every_archived_row_names_a_commit_that_has_its_params_file():
    if (
        subprocess.run(
            ["git", "rev-parse", "--is-shallow-repository"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        != "false"
    ):
        pytest.skip("not a full git clone: the archive's commits cannot be looked up")
    for row in results.load_archive()["rows"]:
        # a self-supervised start first makes its backbone from the same params file
        found = re.match(
            r"git checkout ([0-9a-f]{7}) && (?:lmkit pretrain (params/[\w.-]+\.yaml) .+ && )?"
            r"lmkit run (params/[\w.-]+\.yaml)",
            row["command"],
        )
        if row.get("source"):  # the study's published row: its command is today's paper.yaml
            assert (ROOT / row["command"].split()[2]).exists()
            continue
        assert found and found.group(1) == str(row["commit"]), row["run"]
        assert found.group(2) in (None, found.group(3)), row["run"]
        assert (
            subprocess.run(
                ["git", "cat-file", "-e", f"{found.group(1)}:{found.group(3)}"], cwd=ROOT
            ).returncode
            == 0
        )


@pytest.mark.parametrize("where", ["README.md", "CONTRIBUTING.md", "lmkit --help"])
def test_every_measured_number_quoted_outside_the_results_page_is_on_it(where):
    """A decimal number in the README, CONTRIBUTING.md or lmkit --help is a measurement only the
    results page may hold: each must be on it (a version such as Python >= 3.10 is not one)."""
    from lmkit import cli

    text = cli.__doc__ if where == "lmkit --help" else (ROOT / where).read_text()
    page = (ROOT / "RESULTS.md").read_text()
    numbers = set(re.findall(r"(?<![\w.])(?<!>= )(?<!torch )\d+\.\d+(?![\w.])", text))
    assert not sorted(n for n in numbers if n not in page), where


def test_the_readme_points_only_at_params_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    from lmkit import cli

    for text in (readme, cli.__doc__):
        for name in re.findall(r"params/([\w-]+\.yaml)", text):
            assert (ROOT / "params" / name).exists(), name
    assert (
        "params/helen194-best-cpu.yaml" in cli.__doc__ and "reports/helen68-best-cpu" in cli.__doc__
    )


def test_few_params_files_each_readable_alone():
    files = sorted((ROOT / "params").glob("*.yaml"))
    assert 4 <= len(files) <= 8
    for f in files:
        text = f.read_text()
        data = yaml.safe_load(text)
        assert data["name"] == f.stem, f"{f.name}: name {data['name']!r}"
        assert (
            sum(line.lstrip().startswith("#") or " #" in line for line in text.splitlines()) <= 2
        ), f.name
        depth, base = 1, data.get("base")
        while base:
            depth += 1
            base = yaml.safe_load((f.parent / base).read_text()).get("base")
        assert depth <= 2, f"{f.name}: base: chain {depth} deep"
        P.load(f)  # valid


def test_make_results_rebuilds_the_committed_page_to_the_byte():
    """RESULTS.md is made from what a checkout holds (docs/results/), nothing else: no run folder,
    no date, so `make results` on any clean checkout gives the committed bytes."""
    from lmkit.report.results import render

    assert render([], command="lmkit results") == (ROOT / "RESULTS.md").read_text(), (
        "RESULTS.md: run make results"
    )


def test_a_run_folders_row_goes_into_the_archive_with_its_commit_and_host(tmp_path):
    """lmkit results --rows prints what archive.yaml keeps of a run folder, commit and host included."""
    from lmkit.report.results import archive_row

    row = {
        "group": "helen194",
        "run": "r",
        "folder": str(tmp_path / "r"),
        "commit": "abc1234",
        "host": "Some CPU",
        "chain_min": 12.345,
        "test": {"mse": 27.123, "nme_oc": 0.043149, "nme_io": None},
        "own_box": None,
        "val": {"mse": 26.25},
        "command": "lmkit run params/x.yaml",
    }
    kept = archive_row(row)
    assert kept["commit"] == "abc1234" and kept["host"] == "Some CPU" and kept["chain_min"] == 12.3
    assert kept["test"] == {"mse": 27.1, "nme_oc": 0.0431} and "own_box" not in kept
    assert kept["command"] == "git checkout abc1234 && lmkit run params/x.yaml"


def test_the_readmes_headline_table_is_made_from_the_archived_rows():
    """README.md's headline numbers are the archive's rows marked readme, as `make results` writes
    them: a number edited by hand in the README, or a row changed without make results, fails."""
    readme = (ROOT / "README.md").read_text()
    assert results.with_readme_table(readme, results.load_archive()) == readme, (
        "README.md's headline table: run make results"
    )
    table = results.readme_table(results.load_archive())
    assert "27.84" in table and "helen194-best-cpu" in table and table.count("\n") >= 4


def test_lmkit_results_skips_what_is_not_a_run_folder_and_says_so(tmp_path, capsys):
    """`lmkit results reports/*` meets reports/README.md: skipped and named, never listed as a run."""
    (tmp_path / "README.md").write_text("# run folders\n")
    (tmp_path / "unfinished").mkdir()
    out = tmp_path / "page.md"
    assert (
        results.main([str(tmp_path / "README.md"), str(tmp_path / "unfinished"), "--out", str(out)])
        == 0
    )
    err = capsys.readouterr().err
    assert "README.md: skipped (not a run folder)" in err and "unfinished: skipped" in err
    assert "README.md" not in out.read_text().splitlines()[2]  # the page's "Generated by" line


def test_the_official_test_split_rows_are_on_both_pages_in_percent():
    """Every row of docs/results/official-test.yaml, with its NMEs in percent, on RESULTS.md and in
    the README's headline block, beside the published classical methods."""
    from lmkit.report.results import OFFICIAL_TITLE, load_official

    official = load_official()
    results, readme = (ROOT / "RESULTS.md").read_text(), (ROOT / "README.md").read_text()
    assert OFFICIAL_TITLE in results and OFFICIAL_TITLE in readme
    for r in official["rows"]:
        line = next(line for line in results.splitlines() if line.startswith(f"| **{r['run']}** ("))
        cells = [c.strip() for c in line.split("|")]
        assert (
            cells[3] == f"{100 * r['test']['nme_io']:.2f}"
            and cells[4] == f"{100 * r['test']['nme_oc']:.2f}"
        )
        assert line in readme
    for p in official["published"]:
        assert f"| {p['method']}, as published | 2,000 |" in results
