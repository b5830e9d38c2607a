"""Several search workers on one real PostgreSQL server, as on several machines: each trial
runs exactly once, exactly search.trials complete, and every worker agrees on the winner.

The server is Debian's ``postgresql`` package (``.ci/run`` installs it), started for the test
in a temporary folder on a Unix socket; the test is skipped, saying why, where it is absent."""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lmkit.run import params as P
from tests.study import steps
from lmkit.run.folder import RunFolder
from lmkit.train.search import open_study

from .conftest import TINY

pytestmark = pytest.mark.slow  # whole chains or several processes


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip(
        "psycopg2", reason="the PostgreSQL driver (pip install psycopg2-binary) is not installed"
    )
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server here (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="lmkit-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as Debian's postgres user
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", 45000 + os.getpid() % 10000

    def pg(*args):
        subprocess.run(
            as_user + [str(bin_dir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=120,
        )

    try:
        pg("initdb", "-D", str(data), "-A", "trust", "-U", "lmkit", "--no-sync")
        pg(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(folder / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {folder} -c listen_addresses='' -c fsync=off",
            "start",
        )
    except subprocess.CalledProcessError as e:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {e.stderr.decode(errors='replace')[-300:]}")
    yield f"postgresql+psycopg2://lmkit@/postgres?host={folder}&port={port}"
    pg("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
    shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_one_study_on_postgresql(tmp_path, postgres_url):
    from optuna.trial import TrialState

    trials = 5
    run = RunFolder(tmp_path / "run")
    params = P.load(
        None,
        TINY
        | {"search.storage": postgres_url, "search.trials": trials, "search.epochs_per_trial": 1},
    )
    P.dump(params, run.params)
    steps.prepare(run, params, log=lambda _: None)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "lmkit.cli", "search-worker", str(run.root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)

    study = open_study(postgres_url, steps.study_name(params), params.seed)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == trials
    assert (
        len({(t.params["lr"], t.params["weight_decay"]) for t in complete}) == trials
    )  # none twice
    ran = [re.findall(r"^trial (\d+):", out, re.M) for out in outputs]
    assert all(ran), outputs  # both workers ran trials
    assert not set(ran[0]) & set(ran[1])
    winners = {re.search(r"best trial (\d+)", out).group(1) for out in outputs}
    assert winners == {str(study.best_trial.number)}
    # the chain's own 02_hpsearch finds the study complete: it runs nothing and reports the same winner
    lines = []
    steps.hpsearch(run, params, log=lines.append)
    assert not any(line.startswith("trial ") for line in lines)
    assert P.load(run.params).search.storage == postgres_url
    from lmkit.run.folder import read_json

    assert read_json(run.best_hparams, "")["trial"] == study.best_trial.number


def test_a_worker_needs_a_shared_storage(tmp_path, tiny_params):
    run = RunFolder(tmp_path / "run")
    P.dump(tiny_params, run.params)
    with pytest.raises(ValueError, match="search.storage is not set"):
        steps.search_worker(run)
    with pytest.raises(FileNotFoundError, match="params.yaml: missing"):
        steps.search_worker(RunFolder(tmp_path / "nothing"))
    assert not (tmp_path / "nothing").exists()
