"""Recipes, AutoAttack modes and metrics are registered objects; the evaluator's flags are defined once.

The numbers a built-in recipe computes did not move when the recipes became objects: the weights
after one epoch on digits are pinned by statistics captured from the code before the change (the
benchmark table build relies on ``fgsm-rs`` being bit for bit the same).
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustnas.plugins.errors import ConfigError
from robustnas.plugins.evaluator import (
    EVALUATOR_OPTIONS,
    METRIC_DIRECTIONS,
    METRIC_KEYS,
    METRICS,
    MODES,
    RECIPES,
    AdversarialRecipe,
    AttackMode,
    EvaluatorConfig,
    MetricSpec,
    Recipe,
    TrainConfig,
    load_dataset,
    register_attack,
    register_metric,
    register_recipe,
    train_model,
)
from robustnas.plugins.evaluator import autoattack as aa
from robustnas.plugins.evaluator.attacks import perturb

DOCS = Path(__file__).resolve().parents[2] / "docs" / "internals.md"

#: After ``train_model`` (seed 0, 1 epoch on digits, attack_steps 2, defaults otherwise) of
#: :func:`mlp`: the epoch's mean loss and three statistics of the float tensors of the state dict
#: (sum, L2 norm, position-weighted mean). Captured from the if/elif implementation (commit 2b3dfc0)
#: before the recipes became objects (torch 2.14.1, x86-64, one thread), where the new code gives
#: the same bits. The test allows a relative 1e-6, so another CPU's rounding passes while a changed
#: random draw or loss (which moves these numbers by 1e-3 or more) fails.
BEFORE = {
    "standard": (1.8450559789041863, 44.736643355285196, 7.354933390061558, 37.85387213874853),
    "pgd": (2.5219565742754537, 43.397735305574315, 7.116837284215117, 36.557385467735564),
    "trades": (2.2806075994955144, 36.998866722509774, 6.8605317200438, 30.825182606532717),
    "fgsm-rs": (2.563473775347, 42.79187940810152, 7.108211976092813, 36.11935616834328),
}


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture
def registries(monkeypatch):
    """Registrations made by a test are undone after it."""
    for registry in (RECIPES, MODES, METRICS):
        monkeypatch.setattr(registry, "_items", dict(registry._items))


# ---------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("recipe", list(BEFORE))
def test_every_built_in_recipe_trains_exactly_the_weights_it_trained_before_it_became_an_object(digits, recipe):
    model = mlp()
    config = TrainConfig(recipe=recipe, epochs=1, seed=0, attack_steps=2, progress=False, track_val=False)
    history = train_model(model, digits, config, device="cpu")
    weights = torch.cat([t.detach().flatten() for t in model.state_dict().values() if t.is_floating_point()]).double()
    position = torch.arange(len(weights), dtype=torch.double)
    measured = (float(history["loss"][0]), float(weights.sum()), float(weights.norm()),
                float((weights * position).sum() / len(weights)))
    assert measured == pytest.approx(BEFORE[recipe], rel=1e-6)


def test_recipes_is_a_name_to_recipe_mapping_that_reads_like_the_old_tuple():
    assert list(RECIPES) == ["standard", "pgd", "trades", "fgsm-rs"]
    assert ", ".join(RECIPES) == "standard, pgd, trades, fgsm-rs"
    assert "pgd" in RECIPES and "madry" not in RECIPES and ["pgd"] not in RECIPES
    assert all(isinstance(r, Recipe) and r.name == name for name, r in RECIPES.items())
    assert isinstance(RECIPES["trades"], AdversarialRecipe) and not isinstance(RECIPES["standard"], AdversarialRecipe)


@pytest.mark.parametrize("recipe, k, passes", [("standard", 7, 1), ("pgd", 7, 8), ("pgd", 3, 4), ("trades", 7, 9),
                                               ("fgsm-rs", 7, 2)])
def test_a_recipe_prices_a_step_in_forward_backward_passes_per_example(recipe, k, passes):
    assert RECIPES[recipe].passes(k) == passes


def test_the_plan_cost_of_an_evaluation_is_what_the_name_tables_gave():
    """Captured from compare._evaluation_passes before it asked the objects (k = 5, 2 epochs,
    1000 training and 300 test images, 50 attacked)."""
    from robustnas.plugins.compare import _evaluation_passes

    before = {"standard/fast": 13350, "standard/standard": 353350, "pgd/fast": 23350, "pgd/standard": 363350,
              "trades/fast": 25350, "trades/standard": 365350, "fgsm-rs/fast": 15350, "fgsm-rs/standard": 355350}
    for key, passes in before.items():
        recipe, attack = key.split("/")
        config = EvaluatorConfig(recipe=recipe, attack=attack, train_attack_steps=5, epochs=2, n_examples=50)
        assert _evaluation_passes(config, 1000, 300) == passes


class Mixed(AdversarialRecipe):
    """0.5 CE(clean) + 0.5 CE(FGSM) (Goodfellow et al., ICLR 2015)."""

    name = "mixed-test"

    def passes(self, attack_steps: int) -> int:
        return 3

    def attack(self, model, x, y, threat, config):
        def ce(logits, target):
            return F.cross_entropy(logits, target, reduction="sum")

        return perturb(model, x, ce, y, eps=threat.eps, norm=threat.norm, steps=1, alpha=threat.eps,
                       random_start=False)

    def loss(self, model, x, x_in, y, config):
        logits = model(x)
        return 0.5 * F.cross_entropy(logits, y) + 0.5 * F.cross_entropy(model(x_in), y), logits


def test_a_registered_recipe_trains_and_is_known_to_configs_flags_and_plans(registries, digits):
    from robustnas.plugins.cli import build_parser
    from robustnas.plugins.compare import _evaluation_passes

    assert register_recipe(Mixed()) is RECIPES["mixed-test"]
    model = mlp()
    history = train_model(model, digits, TrainConfig(recipe="mixed-test", epochs=2, lr=0.05, progress=False),
                          device="cpu")
    assert history["recipe"] == "mixed-test" and history["loss"][-1] < history["loss"][0]
    assert history["val_acc"][-1] > 0.5  # chance is 0.1
    config = EvaluatorConfig(recipe="mixed-test", epochs=1, n_examples=10, attack="fast")
    assert _evaluation_passes(config, 100, 20) == 100 * 3 + 20 + 10 * (20 + 1 + 200)
    help_text = _commands(build_parser())["evaluate"].format_help()
    assert "standard, pgd, trades, fgsm-rs, mixed-test" in " ".join(help_text.split())


def test_register_recipe_refuses_a_taken_name_and_what_is_not_a_recipe(registries):
    with pytest.raises(ConfigError, match=r"recipe 'pgd' is already registered.*standard, pgd, trades, fgsm-rs"):
        register_recipe(RECIPES["pgd"].__class__())
    with pytest.raises(ConfigError, match="a recipe must be a Recipe instance, got 'pgd'"):
        register_recipe("pgd")
    with pytest.raises(TypeError):  # passes is abstract: a half-written recipe cannot be made
        type("NoPasses", (Recipe,), {"name": "no-passes"})()
    with pytest.raises(ConfigError, match="unknown recipe 'madry'; valid recipes: standard, pgd, trades, fgsm-rs"):
        TrainConfig(recipe="madry")


# ---------------------------------------------------------------------------- AutoAttack modes
def test_modes_answer_what_they_run_what_they_cost_and_where_they_escalate():
    assert list(MODES) == ["standard", "fast"] and ", ".join(MODES) == "standard, fast"
    assert (MODES["fast"].passes, MODES["standard"].passes) == (200, 7000)
    assert (MODES["fast"].escalate_to, MODES["standard"].escalate_to) == ("standard", None)
    built = {(mode, classes): aa.build_autoattack(nn.Linear(4, classes), norm="linf", eps=0.1, mode=mode,
                                                  num_classes=classes)
             for mode in MODES for classes in (3, 10)}
    assert built["standard", 10].attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert built["standard", 10].apgd_targeted.n_target_classes == built["standard", 10].fab.n_target_classes == 9
    assert built["standard", 3].attacks_to_run == ["apgd-ce", "square"] and built["standard", 3].version == "custom"
    assert built["fast", 10].attacks_to_run == ["apgd-ce", "apgd-t"] and built["fast", 3].attacks_to_run == ["apgd-ce"]
    assert built["fast", 10].apgd.n_restarts == 1 and built["fast", 10].apgd_targeted.n_target_classes == 3
    with pytest.raises(ConfigError, match="unknown AutoAttack mode 'plus'; valid modes: standard, fast"):
        aa.build_autoattack(nn.Linear(4, 10), norm="linf", eps=0.1, mode="plus")


class APGDCEOnly(AttackMode):
    name = "apgd-ce-test"
    passes = 100

    def build(self, model, threat, *, num_classes, seed, device):
        from pyautoattack import AutoAttack

        adversary = AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[threat.norm], eps=threat.eps,
                               version="custom", attacks=["apgd-ce"], device=device, seed=seed)
        adversary.apgd.n_restarts = 1
        return adversary


def test_a_registered_mode_runs_only_its_attacks_and_is_never_stronger_than_fast(registries, digits):
    register_attack(APGDCEOnly())
    model = mlp()
    train_model(model, digits, TrainConfig(recipe="fgsm-rs", epochs=3, lr=0.05, progress=False), device="cpu")
    x, y = digits.tensors("test", 64)
    ours = aa.autoattack_evaluation(model, x, y, norm="linf", eps=0.1, mode="apgd-ce-test", device="cpu")
    fast = aa.autoattack_evaluation(model, x, y, norm="linf", eps=0.1, mode="fast", device="cpu")
    assert list(ours.per_attack) == ["apgd-ce"] and list(fast.per_attack) == ["apgd-ce", "apgd-t"]
    assert ours.per_attack["apgd-ce"] == fast.per_attack["apgd-ce"]  # same seed, same first attack
    assert 0.0 < fast.robust_acc <= ours.robust_acc  # fast adds APGD-T on top
    assert EvaluatorConfig(attack="apgd-ce-test").attack == "apgd-ce-test"
    with pytest.raises(ConfigError, match="AutoAttack mode 'fast' is already registered"):
        register_attack(MODES["fast"].__class__())


# ---------------------------------------------------------------------------- metrics
def test_metric_keys_and_directions_are_read_from_one_declaration_with_the_old_contents_and_order():
    assert METRIC_KEYS == ("clean_acc", "robust_acc", "pgd_acc", "params", "flops", "latency_ms", "train_seconds",
                           "eval_seconds", "norm", "eps", "attack", "n_examples", "dataset", "recipe", "epochs",
                           "flags")
    assert list(METRIC_DIRECTIONS.items()) == [
        ("clean_acc", "maximize"), ("robust_acc", "maximize"), ("pgd_acc", "maximize"), ("fgsm_acc", "maximize"),
        ("certified_acc", "maximize"), ("params", "minimize"), ("flops", "minimize"), ("latency_ms", "minimize"),
    ]
    from robustnas.strategies import pareto

    assert pareto.METRIC_DIRECTIONS is METRIC_DIRECTIONS and pareto.DIRECTIONS == ("maximize", "minimize")
    assert all(METRICS[k].direction == d for k, d in METRIC_DIRECTIONS.items())


def test_a_registered_metric_is_an_objective_everywhere_at_once(registries):
    from robustnas.strategies.pareto import ParetoArchive, directions_for

    with pytest.raises(ValueError, match="unknown objective"):
        directions_for(["robust_gap"])
    register_metric(MetricSpec("robust_gap", "minimize", "clean_acc - robust_acc"))
    assert directions_for(["robust_acc", "robust_gap"]) == ["maximize", "minimize"]
    archive = ParetoArchive(("robust_acc", "robust_gap"))
    for i, (robust, gap) in enumerate([(0.5, 0.4), (0.4, 0.3), (0.3, 0.5)]):
        archive.add({"sample": {"op": i}, "metrics": {"robust_acc": robust, "robust_gap": gap}})
    assert sorted(r["sample"]["op"] for r in archive.front()) == [0, 1]  # (0.3, 0.5) is dominated by both
    assert "robust_gap" not in METRIC_KEYS


def test_register_metric_refuses_taken_names_unknown_directions_and_always(registries):
    with pytest.raises(ConfigError, match="metric 'params' is already registered"):
        register_metric(MetricSpec("params", "maximize", "params, upside down"))
    with pytest.raises(ConfigError, match="unknown direction 'up'; valid directions: maximize, minimize"):
        MetricSpec("height", "up", "how tall")
    with pytest.raises(ConfigError, match="always=True is for the built-in evaluator's own keys"):
        register_metric(MetricSpec("height", None, "how tall", always=True))


# ---------------------------------------------------------------------------- evaluator flags
def _commands(parser) -> dict:
    """The subcommand parsers of ``robustnas`` by name."""
    import argparse

    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _evaluator_flags(parser) -> dict[str, tuple]:
    names = {o.flag for o in EVALUATOR_OPTIONS}
    return {a.option_strings[0]: (a.dest, a.type, a.choices, a.help) for a in parser._actions
            if a.option_strings and a.option_strings[0] in names}


def test_every_command_takes_the_same_evaluator_flags_from_one_definition():
    from robustnas.plugins.cli import build_parser

    commands = _commands(build_parser())
    flags = {name: _evaluator_flags(commands[name]) for name in ("compare", "search", "evaluate", "optuna-worker")}
    assert list(flags["evaluate"]) == ["--dataset", "--root", "--download", "--eps", "--norm", "--recipe", "--epochs",
                                       "--aa-mode", "--n-examples", "--device"]
    assert flags["compare"] == flags["search"] == flags["evaluate"] == flags["optuna-worker"]
    assert flags["evaluate"]["--norm"][2] == ("linf", "l2")
    assert flags["evaluate"]["--recipe"][3] == "training recipe: standard, pgd, trades, fgsm-rs"


def test_worker_flags_reach_the_evaluator_settings_and_eval_arg_still_wins():
    import argparse

    from robustnas.plugins.optuna import add_worker_arguments
    from robustnas.plugins.optuna._worker import _settings

    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    args = parser.parse_args(["--study", "s", "--storage", "x.log", "--n-trials", "1", "--eps", "0.1", "--norm",
                              "l2", "--recipe", "trades", "--n-examples", "16", "--eval-arg", "recipe=standard"])
    assert _settings(args)["evaluator"] == {"eps": 0.1, "norm": "l2", "recipe": "standard", "n_examples": 16,
                                            "progress": False}


def test_compare_takes_every_evaluator_flag_but_dataset_which_is_its_own_field(tmp_path):
    from robustnas.plugins.compare import EVALUATOR_FLAGS, CompareConfig

    assert EVALUATOR_FLAGS == ("root", "download", "eps", "norm", "recipe", "epochs", "aa_mode", "n_examples",
                               "device")
    config = CompareConfig.from_options({"dataset": "digits", "eps": 0.1, "recipe": "standard",
                                         "out": str(tmp_path)})
    assert config.dataset == "digits" and "dataset" not in config.search
    assert config.search["eps"] == config.final["eps"] == 0.1 and config.final["recipe"] == "standard"


# ---------------------------------------------------------------------------- the docs' example
def _docs_example() -> str:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Adding a recipe, an attack or a metric"):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_extension_example_of_the_docs_runs_and_its_new_names_work_together(registries):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_docs_example(), str(DOCS), "exec"), {"__name__": "docs_example"})  # noqa: S102 (our docs)
    metrics_line, directions_line = out.getvalue().strip().splitlines()
    metrics = ast.literal_eval(metrics_line)  # the dict the example prints
    assert metrics["recipe"] == "mixed-fgsm" and metrics["attack"] == "apgd-ce"
    assert metrics["clean_acc"] > 0.5 and 0.0 < metrics["robust_acc"] < metrics["clean_acc"]
    assert metrics["robust_gap"] == pytest.approx(metrics["clean_acc"] - metrics["robust_acc"])
    assert directions_line == "['maximize', 'minimize']"
    documented = DOCS.read_text(encoding="utf-8").split("Output (CPU, one thread):\n\n```\n")[1].split("```")[0]
    documented_metrics, documented_directions = documented.strip().splitlines()
    assert documented_directions == directions_line
    documented_metrics = ast.literal_eval(documented_metrics)
    assert {k: v for k, v in documented_metrics.items() if isinstance(v, str)} == \
        {k: v for k, v in metrics.items() if isinstance(v, str)}
    for key in ("clean_acc", "pgd_acc", "robust_acc"):  # the documented run, within what another CPU may round
        assert metrics[key] == pytest.approx(documented_metrics[key], abs=0.05)
