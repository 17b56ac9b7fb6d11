"""The strategy contract (robustnas.plugins.testing.check_strategy) of every registered strategy on
every robustnas space, at tiny budgets: NNI 3.0's built-ins and ours.

Each cell runs ``check_strategy`` on a fresh space for 1x8x8 digits: multi-trial strategies for 2 or
3 candidates judged by the shared evaluator (one epoch, a 4-example fast AutoAttack), one-shot
strategies for one epoch of at most a few batches. Beyond the contract (capabilities that match the
class, every trial trained, an export the space accepts and, on robust201, the same trials and
export again from the same seed for a strategy that takes one) it asserts what a user gets back:
every trial's full metrics dict with its own ``arch_key``, records that rebuild the measured
network, and an exported architecture that builds and runs.

Set ``ROBUSTNAS_NNI_MATRIX=path.md`` to write the table that docs/nni.md shows.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from nni.nas.experiment import NasExperiment

from robustnas.plugins.errors import ConfigError
from robustnas.plugins.evaluator import METRIC_KEYS, load_dataset
from robustnas.plugins.nni import ARCH_KEY, arch_key, classification_evaluator, run_experiment
from robustnas.plugins.testing import check_strategy
from robustnas.search_spaces import build_model, export_record, get_space
from robustnas.search_spaces.tiny import BLOCK_NAMES
from robustnas.strategies import STRATEGIES as REGISTERED, get_strategy, takes_seed

SPACES = {
    "arnas": dict(width=4, num_cells=4),
    "dsrna": dict(width=4, num_cells=3),
    "tiny": dict(stages=[[2, 8, 1], [1, 16, 2]]),  # layer 1 may be a skip
    "robust201": dict(width=4),
}
#: name -> (kwargs, candidates); None candidates: one-shot.
STRATEGIES = {
    "random": (dict(seed=0), 2),
    "grid-search": (dict(seed=0), 2),
    "evolution": (dict(population_size=2, sample_size=2, seed=0), 3),  # the 3rd is a mutation
    "tpe": (dict(seed=0), 2),
    "policy-rl": (dict(samples_per_update=2), 2),  # one PPO update
    "darts": ({}, None),
    "gumbel-darts": ({}, None),
    "proxyless": ({}, None),
    "enas": (dict(batches_per_update=1), None),  # a controller update per validation batch
    "random-oneshot": ({}, None),
    "arnas": (dict(pgd_steps=1, eval_batches=1, eval_pgd_steps=1), None),
    "dsrna": (dict(eval_batches=1, eval_pgd_steps=1), None),
    "tamnas": (dict(attack_steps=1, population_size=2, generations=1, eval_pgd_steps=1, eval_batches=1,
                    bn_batches=1), None),
}
RL = ("policy-rl", "enas")
#: Strategies that mix widths (DARTS-style relaxation): the tiny space's width-fitted skip refuses
#: them (docs/search_spaces.md); they run on a tiny space without the skip block. NNI's fail the
#: trial; ours (ARNAS, DSRNA) raise the refusal when the supernet is built.
MIXES_WIDTHS = ("darts", "gumbel-darts", "proxyless")
OURS_MIX_WIDTHS = ("arnas", "dsrna")
#: The space on which a strategy that takes a seed runs a second time with it (the cheapest cells).
REPEAT_ON = "robust201"
NO_SKIP = [block for block in BLOCK_NAMES if block != "skip"]

_RESULTS: dict[tuple[str, str], str] = {}


def _rl_available() -> bool:
    try:
        get_strategy("policy-rl")
    except ConfigError:
        return False
    return True


@pytest.fixture(scope="module")
def bundle():
    return load_dataset("digits")


@pytest.fixture(scope="module", autouse=True)
def _write_matrix():
    yield
    out = os.environ.get("ROBUSTNAS_NNI_MATRIX")
    if not out or not _RESULTS:
        return
    lines = ["| strategy | " + " | ".join(SPACES) + " |", "|---|" + "---|" * len(SPACES)]
    for strategy in STRATEGIES:
        cells = [_RESULTS.get((space, strategy), "not run") for space in SPACES]
        lines.append(f"| `{strategy}` | " + " | ".join(cells) + " |")
    Path(out).write_text("\n".join(lines) + "\n")


def _space(name: str, **overrides):
    return get_space(name, input_shape=(1, 8, 8), num_classes=10, **{**SPACES[name], **overrides})


def test_the_matrix_covers_every_built_in_strategy():
    assert sorted(STRATEGIES) == sorted(REGISTERED)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("space_name", list(SPACES))
def test_every_strategy_passes_its_contract_on_every_space_and_returns_full_metrics(space_name, strategy, bundle,
                                                                                    tmp_path, caplog, monkeypatch):
    torch.manual_seed(0)
    kwargs, candidates = STRATEGIES[strategy]
    if strategy in RL and not _rl_available():
        _RESULTS[(space_name, strategy)] = "needs the `rl` extra"
        pytest.skip("tianshou 0.5 / gym 0.26 are not installed (pip install 'robustnas[rl]')")
    overrides, note, limit, evaluator = {}, "", None, None
    if candidates is None:
        # ENAS rewards its controller on validation batches, which come after every training batch.
        # (batches of 256: 5 training and 2 validation batches of digits per epoch).
        batch_size, limit = (256, None) if strategy == "enas" else (64, 2)
        evaluator = classification_evaluator(bundle, batch_size=batch_size, max_epochs=1, limit_train_batches=limit,
                                             limit_val_batches=1)
        refusal = "ChannelSkip supports single-path (sampling) one-shot strategies only"
        if space_name == "tiny" and strategy in MIXES_WIDTHS:
            refused = run_experiment(_space(space_name), get_strategy(strategy, **kwargs), evaluator,
                                     working_dir=tmp_path / "skip")
            assert [r["status"] for r in refused.records] == ["failed"]
            assert refusal in caplog.text
        elif space_name == "tiny" and strategy in OURS_MIX_WIDTHS:
            threat = bundle.threat
            experiment = NasExperiment(_space(space_name), evaluator,
                                       get_strategy(strategy, eps=threat.eps, norm=threat.norm, **kwargs))
            experiment.config.experiment_working_directory = str(tmp_path / "skip")
            try:
                with pytest.raises(TypeError, match=re.escape(refusal)):
                    experiment.run()
            finally:
                experiment.stop()  # NNI otherwise stops it at exit, after pytest closed its streams
        if space_name == "tiny" and strategy in MIXES_WIDTHS + OURS_MIX_WIDTHS:
            overrides, note = {"blocks": NO_SKIP}, "refused with `skip`; without it: "
    updates = []
    if strategy in RL:  # the controller must learn, not only sample
        from tianshou.policy import PPOPolicy

        update = PPOPolicy.update
        monkeypatch.setattr(PPOPolicy, "update", lambda self, *a, **k: updates.append(1) or update(self, *a, **k))
    check = check_strategy(strategy, space=space_name, space_kwargs={**SPACES[space_name], **overrides},
                           strategy_kwargs=kwargs, budget=candidates or 1, evaluator=evaluator,
                           repeat=takes_seed(strategy) and space_name == REPEAT_ON)
    result, seconds = check.run.result, check.run.seconds
    assert updates or strategy not in RL
    assert check.repeated == (takes_seed(strategy) and space_name == REPEAT_ON)

    records = result.records
    assert records and all(r["status"] == "trained" for r in records), [r.get("error") for r in records]
    if candidates is not None:
        assert len(records) == candidates
        for record in records:
            metrics = record["metrics"]
            assert set(METRIC_KEYS) | {"default", ARCH_KEY} <= set(metrics)
            assert metrics[ARCH_KEY] == arch_key(record["sample"])
            assert metrics["params"] == sum(p.numel() for p in build_model(record["record"]).parameters())
        assert result.top_models[0]["metrics"]["default"] == max(r["metrics"]["default"] for r in records)
    exported = result.exported[0]
    model = build_model(export_record(_space(space_name, **overrides), exported)).eval()
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    done = f"{len(records)} trials" if candidates else ("1 epoch" if limit is None else f"{limit} batches")
    _RESULTS[(space_name, strategy)] = f"ok ({note}{done}, {seconds:.0f} s)"
