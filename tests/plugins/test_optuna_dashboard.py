"""optuna-dashboard on the storages a run leaves: it finds a robustnas study, its directions and
its objective (metric) names through its HTTP API.

The dashboard runs as users start it (the ``optuna-dashboard`` command, on 127.0.0.1, a free
port) against a journal file named like a compare run folder's ``optuna.journal``, a SQLite
file and, where ``.ci/run`` set ``ROBUSTNAS_TEST_POSTGRES_URL``, a PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest

from robustnas.plugins.optuna import create_study, open_storage
from robustnas.search_spaces import get_space
from robustnas.strategies.sampling import suggest_architecture

optuna.logging.set_verbosity(optuna.logging.WARNING)

OBJECTIVES = ("clean_acc", "robust_acc", "params")
POSTGRES_URL = "ROBUSTNAS_TEST_POSTGRES_URL"
VALUES = [[0.5, 0.375, 1000.0], [0.625, 0.25, 2000.0], [0.75, 0.125, 3000.0]]  # all non-dominated


def _dashboard_command() -> str:
    """The ``optuna-dashboard`` script of this environment (the test extra installs it)."""
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e '.[test]')")
    script = Path(sys.executable).parent / "optuna-dashboard"
    found = str(script) if script.exists() else shutil.which("optuna-dashboard")
    if not found:
        pytest.fail("the optuna_dashboard package is installed but its optuna-dashboard command is not")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def _fill(study: optuna.Study) -> None:
    """Three trials as RobustObjective leaves them: an architecture, its metrics, the values."""
    space = get_space("tiny", input_shape=(1, 8, 8), num_classes=10, stages=[[1, 8, 1], [1, 16, 2]])
    for values in VALUES:
        trial = study.ask()
        suggest_architecture(trial, space)
        metrics = dict(zip(OBJECTIVES, values))
        trial.set_user_attr("metrics", metrics)
        study.tell(trial, [metrics[name] for name in OBJECTIVES])


@pytest.fixture(params=["journal", "sqlite", "postgresql"])
def storage(request, tmp_path):
    """(URL for create_study, argument for optuna-dashboard, study name) of a filled study."""
    name = f"tiny-seed{uuid.uuid4().hex[:8]}"
    if request.param == "journal":
        path = tmp_path / "optuna.journal"  # the name compare gives it in a run folder
        url, argument = f"journal:///{path}", str(path)
    elif request.param == "sqlite":
        url = argument = f"sqlite:///{tmp_path / 'study.db'}"
    else:
        url = argument = os.environ.get(POSTGRES_URL, "")
        if not url:
            why = f"{POSTGRES_URL} is not set (.ci/run starts PostgreSQL and sets it)"
            if os.environ.get("CI"):
                pytest.fail(f"{why}; in CI it must be set")
            pytest.skip(why)
    _fill(create_study(OBJECTIVES, storage=url, study_name=name, sampler="random", seed=0))
    yield url, argument, name
    if request.param == "postgresql":
        optuna.delete_study(study_name=name, storage=open_storage(url))


def test_optuna_dashboard_finds_the_study_with_its_objective_names_through_its_http_api(storage, tmp_path):
    url, argument, name = storage
    port = _free_port()
    log = tmp_path / "dashboard.log"
    with log.open("wb") as out:
        server = subprocess.Popen([_dashboard_command(), argument, "--host", "127.0.0.1", "--port", str(port),
                                   "--server", "wsgiref"], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                studies = _get(f"{base}/api/studies")["study_summaries"]
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"optuna-dashboard did not answer on {base}: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        summary = [s for s in studies if s["study_name"] == name]
        assert len(summary) == 1, [s["study_name"] for s in studies]
        assert summary[0]["directions"] == ["maximize", "maximize", "minimize"]

        detail = _get(f"{base}/api/studies/{summary[0]['study_id']}")
        assert detail["name"] == name
        assert detail["objective_names"] == list(OBJECTIVES)
        assert detail["directions"] == ["maximize", "maximize", "minimize"]
        assert [t["values"] for t in detail["trials"]] == VALUES
        assert len(detail["best_trials"]) == 3  # the Pareto front: each trades accuracy for robustness
        params = {p["name"] for p in detail["trials"][0]["params"]}
        assert params == {"layer0/block", "layer0/width", "layer1/block", "layer1/width"}
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
