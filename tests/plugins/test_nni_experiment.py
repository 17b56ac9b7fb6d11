"""run_experiment at its edges: NNI's import order, a run that raises, and a pair refused up front."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from nni.nas.experiment import NasExperiment
from nni.nas.strategy import Random

from robustnas.plugins.errors import ConfigError
from robustnas.plugins.nni import classification_evaluator, robust_evaluator, run_experiment
from robustnas.search_spaces import get_space
from robustnas.strategies import ARNAS, DSRNA

TINY = dict(input_shape=(1, 8, 8), num_classes=10, stages=[[2, 8, 1], [1, 16, 2]])  # layer 1 may be a skip


NNI_ONE_SHOT = ["darts", "gumbel-darts", "proxyless", "enas", "random-oneshot"]


@pytest.mark.parametrize("first_import, one_shot", [
    ("from robustnas.plugins.nni import TPE", NNI_ONE_SHOT + ["arnas", "dsrna", "tamnas"]),
    ("import nni.nas.oneshot.pytorch.strategy", NNI_ONE_SHOT),
])
def test_the_registry_gives_nnis_real_one_shot_strategies_whatever_the_first_import(first_import, one_shot):
    # NNI 3.0: importing nni.nas.oneshot.pytorch.strategy before nni.nas.strategy leaves DARTS,
    # RandomOneShot, ... in nni.nas.strategy as stubs (ImportFailedStrategy) that raise when run.
    script = textwrap.dedent(f"""
        {first_import}  # the first import of the process
        from nni.nas.oneshot.pytorch.strategy import DARTS
        from robustnas.strategies import get_strategy, is_one_shot
        assert [name for name in {one_shot!r} if not is_one_shot(name)] == []
        assert type(get_strategy("darts")) is DARTS, type(get_strategy("darts"))
        assert not is_one_shot("tpe")
        print("ok")
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


class _FailingRandom(Random):
    """NNI's Random whose exploration raises before it submits anything."""

    def _run(self) -> None:
        raise RuntimeError("the strategy failed on purpose")


def test_run_experiment_stops_the_experiment_when_the_run_raises_and_raises_the_error(tmp_path, monkeypatch):
    stopped = []
    stop = NasExperiment.stop
    monkeypatch.setattr(NasExperiment, "stop", lambda self: stopped.append(self) or stop(self))
    space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10, width=4)
    with pytest.raises(RuntimeError, match="failed on purpose"):
        run_experiment(space, _FailingRandom(seed=0), robust_evaluator({"dataset": "digits", "epochs": 1}),
                       max_trial_number=2, working_dir=tmp_path)
    assert len(stopped) == 1  # by run_experiment, not left to NNI's atexit hook


@pytest.mark.parametrize("strategy", [ARNAS, DSRNA])
def test_arnas_and_dsrna_on_a_width_fitted_skip_raise_a_config_error_before_anything_starts(strategy, digits,
                                                                                           tmp_path):
    evaluator = classification_evaluator(digits, batch_size=64, limit_train_batches=1, limit_val_batches=1)
    with pytest.raises(ConfigError, match=r"space 'tiny'.*'skip'.*layer1/block") as refusal:
        run_experiment(get_space("tiny", **TINY), strategy(eps=digits.threat.eps, norm=digits.threat.norm),
                       evaluator, working_dir=tmp_path / "run")
    assert strategy.__name__ in str(refusal.value) and "tamnas" in str(refusal.value)  # what to use instead
    assert not (tmp_path / "run").exists()  # nothing started, nothing written
