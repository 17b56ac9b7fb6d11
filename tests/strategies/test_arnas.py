"""ARNAS strategy: MGDA closed form, second-order gradient, and a real search in a NasExperiment."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from robustnas.strategies import ARNAS, get_strategy, mgda_two_task

SPACE_KWARGS = {"width": 2, "num_cells": 4}
STEPS = 2


pytestmark = pytest.mark.usefixtures("single_thread")


def _brute_force_gamma(u1: torch.Tensor, u2: torch.Tensor) -> float:
    """Minimise ||g u1 + (1 - g) u2|| over [0, 1] by a fine grid, then a finer grid around the best."""
    u1, u2 = u1.double(), u2.double()

    def best(grid: torch.Tensor) -> float:
        norms = torch.stack([(g * u1 + (1 - g) * u2).norm() for g in grid])
        return float(grid[int(norms.argmin())])

    g0 = best(torch.linspace(0, 1, 2001, dtype=torch.float64))
    return best(torch.linspace(max(0.0, g0 - 1e-3), min(1.0, g0 + 1e-3), 2001, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(8))
def test_mgda_gamma_is_the_brute_force_minimum_norm_point(seed):
    gen = torch.Generator().manual_seed(seed)
    dim = 5 + 7 * seed
    u1 = torch.randn(dim, generator=gen)
    u2 = torch.randn(dim, generator=gen) * (0.1 if seed % 2 else 1.0) + (u1 if seed % 3 == 0 else 0)
    gamma, direction = mgda_two_task(u1, u2)
    assert 0.0 <= gamma <= 1.0
    assert gamma == pytest.approx(_brute_force_gamma(u1, u2), abs=2e-6)
    assert torch.allclose(direction, gamma * u1 + (1 - gamma) * u2)
    brute = _brute_force_gamma(u1, u2)
    assert float(direction.norm()) <= float((brute * u1 + (1 - brute) * u2).norm()) + 1e-6


def test_mgda_direction_descends_both_losses_when_gamma_is_interior():
    u1 = torch.tensor([1.0, 0.2, 0.0])
    u2 = torch.tensor([0.1, 1.0, 0.3])
    gamma, d = mgda_two_task(u1, u2)
    assert 0 < gamma < 1
    assert float(d @ u1) > 0 and float(d @ u2) > 0


def test_mgda_handles_identical_gradients_and_keeps_shapes():
    u = torch.randn(3, 4)
    gamma, d = mgda_two_task(u, u.clone())
    assert gamma == 0.5 and torch.allclose(d, u) and d.shape == (3, 4)
    with pytest.raises(ValueError, match="same shape"):
        mgda_two_task(torch.zeros(3), torch.zeros(4))


def test_mgda_clamps_to_the_smaller_gradient_when_it_is_dominated():
    u1 = torch.tensor([10.0, 0.0])
    u2 = torch.tensor([1.0, 0.0])
    assert mgda_two_task(u1, u2)[0] == 0.0
    assert mgda_two_task(u2, u1)[0] == 1.0


def test_unrolled_gradient_matches_the_exact_second_order_derivative():
    """DARTS' finite-difference Hessian-vector product against autograd through the virtual step."""
    from nni.nas.evaluator.pytorch.lightning import ClassificationModule
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace
    from nni.nas.strategy import DARTS

    from robustnas.strategies._oneshot import DartsSettings, RobustDartsModule

    class Toy(ModelSpace):
        def __init__(self) -> None:
            super().__init__()
            self.choice = LayerChoice([nn.Linear(6, 3), nn.Sequential(nn.Linear(6, 3), nn.Tanh())], label="op")

        def forward(self, x):
            return self.choice(x)

    torch.manual_seed(0)
    net = DARTS().mutate_model(Toy()).double()
    module = RobustDartsModule(ClassificationModule(num_classes=3), settings=DartsSettings(unrolled=True, unrolled_r=1e-3))
    module.set_model(net)
    xi = 0.3
    module._weight_optimizer = lambda: torch.optim.SGD(module.weights(), lr=xi)  # no trainer needed
    with torch.no_grad():
        module.alphas()[0].copy_(torch.tensor([0.3, -0.2]))
    xt, yt = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
    xv, yv = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
    before = [p.detach().clone() for p in net.parameters()]

    approx = module.unrolled_gradient(lambda: module.criterion_loss(xv, yv), [xt, yt])

    assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), before)), "weights must be restored"
    names = {id(p): n for n, p in net.named_parameters()}
    weights = module.weights()
    g_train = torch.autograd.grad(module.criterion_loss(xt, yt), weights, create_graph=True)
    virtual = {names[id(p)]: p - xi * g for p, g in zip(weights, g_train)}
    val = nn.functional.cross_entropy(torch.func.functional_call(net, virtual, (xv,)), yv)
    exact = torch.autograd.grad(val, module.alphas())
    first_order = torch.autograd.grad(module.criterion_loss(xv, yv), module.alphas())
    assert torch.allclose(approx[0], exact[0], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(first_order[0], exact[0], rtol=1e-3), "second-order term must matter here"


def test_arguments_are_validated_and_eps_defaults_follow_the_dataset():
    assert ARNAS().eps == pytest.approx(8 / 255)
    strategy = ARNAS(dataset="digits")
    assert strategy.eps == pytest.approx(0.2) and strategy.alpha == pytest.approx(0.05)
    assert ARNAS(eps=0.1, alpha=0.02).alpha == 0.02
    with pytest.raises(ValueError, match="linf, l2"):
        ARNAS(norm="l1")
    with pytest.raises(ValueError, match="pgd_steps"):
        ARNAS(pgd_steps=0)
    with pytest.raises(ValueError, match="sgd, evaluator"):
        ARNAS(weight_optimizer="adam")
    with pytest.raises(ValueError, match="datasets with a default threat"):
        ARNAS(dataset="imagenet-1k")


def test_registry_builds_strategies_by_name_and_lists_valid_names_on_error():
    from nni.nas.strategy import DARTS, RegularizedEvolution

    assert isinstance(get_strategy("arnas", pgd_steps=3), ARNAS)
    assert isinstance(get_strategy("evolution"), RegularizedEvolution)
    assert isinstance(get_strategy("darts"), DARTS)
    with pytest.raises(ValueError, match="arnas.*dsrna.*gumbel-darts"):
        get_strategy("nope")


def test_registry_says_which_strategies_take_a_seed():
    from robustnas.strategies import strategy_factory, takes_seed

    assert strategy_factory("ARNAS") is ARNAS
    assert [name for name in ("random", "evolution", "tamnas", "arnas", "dsrna", "darts") if takes_seed(name)] == [
        "random", "evolution", "tamnas"]
    with pytest.raises(ValueError, match="valid strategies"):
        takes_seed("nope")


@pytest.fixture(scope="module")
def arnas_run(one_shot_search, tmp_path_factory):
    from robustnas.search_spaces import ARNASSpace

    strategy = ARNAS(dataset="digits", pgd_steps=2, eval_batches=1, eval_pgd_steps=2)
    snapshot = one_shot_search(ARNASSpace, SPACE_KWARGS, strategy, steps=STEPS, tmp_path=tmp_path_factory.mktemp("arnas"))
    return strategy, snapshot


def test_arnas_search_in_nas_experiment_exports_a_valid_architecture(arnas_run):
    from robustnas.search_spaces import ARNASSpace, build_model, export_record

    strategy, _ = arnas_run
    front = strategy.pareto_front()
    assert len(front) == 1
    record = export_record(ARNASSpace(input_shape=(1, 8, 8), num_classes=10, **SPACE_KWARGS), front[0]["sample"])
    assert {label.split("/")[0] for label in record["sample"]} == {"accurate", "reduce", "robust"}
    model = build_model(json.loads(json.dumps(record))).eval()
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    metrics = front[0]["metrics"]
    assert 0 <= metrics["pgd_acc"] <= metrics["clean_acc"] <= 1
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    json.dumps(front)


def test_arnas_search_moves_the_architecture_weights(arnas_run):
    _, snapshot = arnas_run
    assert len(snapshot.params) > 0
    assert snapshot.max_change() > 1e-4


def test_arnas_logs_gamma_every_step_and_it_stays_in_the_unit_interval(arnas_run):
    strategy, _ = arnas_run
    history = strategy.gamma_history
    assert len(history) == STEPS
    assert all(0.0 <= g <= 1.0 for g in history)
    logged = strategy.oneshot_module.trainer.callback_metrics["arnas/gamma"]
    assert float(logged) == pytest.approx(history[-1])
    assert strategy.records[0]["metrics"]["gamma_steps"] == STEPS
    assert np.isclose(strategy.records[0]["metrics"]["gamma_mean"], np.mean(history))


def test_arnas_trains_weights_on_pgd_examples_within_eps(arnas_run):
    strategy, _ = arnas_run
    module = strategy.oneshot_module
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))
    x_adv = module.prepare_train_batch([x, y])[0]
    assert float((x_adv - x).abs().max()) <= strategy.eps + 1e-6
    assert float((x_adv - x).abs().max()) > 0
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_arnas_second_order_search_runs_in_an_experiment(one_shot_search, tmp_path):
    from robustnas.search_spaces import ARNASSpace

    strategy = ARNAS(dataset="digits", pgd_steps=1, unrolled=True, eval_batches=1, eval_pgd_steps=1)
    snapshot = one_shot_search(ARNASSpace, SPACE_KWARGS, strategy, steps=1, tmp_path=tmp_path)
    assert snapshot.max_change() > 1e-4
    assert len(strategy.gamma_history) == 1
