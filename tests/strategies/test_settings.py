"""Each search setting is declared once: DARTS' weight optimiser and export rule in DartsSettings,
DSRNA's robustness term in DsrnaRegularizer; the strategies take them as keyword arguments."""

from __future__ import annotations

import dataclasses

import pytest

from robustnas.strategies import ARNAS, DSRNA
from robustnas.strategies._oneshot import DartsSettings
from robustnas.strategies.dsrna import DsrnaRegularizer


def test_strategies_take_the_darts_settings_as_keywords_and_hand_them_to_their_module():
    strategy = ARNAS(dataset="digits", weight_lr=0.05, unrolled=True, exclude_none=0)
    assert strategy.settings == DartsSettings(weight_lr=0.05, unrolled=True, exclude_none=False)
    assert strategy.settings.exclude_none is False
    assert ARNAS().settings == DartsSettings()
    assert DSRNA().settings == DartsSettings(max_parameter_free=2)  # P-DARTS' cap (docs/fidelity.md)
    assert DSRNA(max_parameter_free=None).settings == DartsSettings()
    assert [f.name for f in dataclasses.fields(DartsSettings)] == [
        "unrolled", "unrolled_r", "weight_optimizer", "weight_lr", "weight_lr_min", "weight_momentum",
        "weight_decay", "exclude_none", "max_parameter_free"]


def test_bad_settings_are_refused_naming_the_value_and_the_valid_ones():
    with pytest.raises(ValueError, match="unknown weight_optimizer 'adam'; valid: sgd, evaluator"):
        DartsSettings(weight_optimizer="adam")
    with pytest.raises(TypeError, match="weight_lrr"):
        ARNAS(weight_lrr=0.1)  # an unknown keyword still reaches NNI DARTS, which refuses it


def test_dsrna_keeps_its_robustness_term_in_one_checked_record():
    strategy = DSRNA(metric="combined", gamma=0.5, q=2, bound_method="crown", warmup_epochs=2)
    reg = strategy.regularizer
    assert (reg.metric, reg.gamma, reg.q, reg.bound_method, reg.warmup_epochs) == ("combined", 0.5, 2, "crown", 2)
    assert strategy.module_kwargs() == {"regularizer": reg, "eps": strategy.eps, "norm": strategy.norm}
    fields = {f.name: getattr(reg, f.name) for f in dataclasses.fields(DsrnaRegularizer)}
    for change, message in (({"jacobian_mode": "svd"}, "unknown jacobian_mode 'svd'; valid: exact, projection"),
                            ({"q": 3}, "q must be 1 or 2"), ({"weight_reg": -1.0}, "weight_reg must be >= 0")):
        with pytest.raises(ValueError, match=message):
            DsrnaRegularizer(**{**fields, **change})
