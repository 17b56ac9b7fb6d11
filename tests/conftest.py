"""Suite-wide settings and fixtures: one torch thread per test module, the digits bundle.

The models of the suite are tiny; on a 2-core machine a second intra-op thread costs more in
synchronisation than it gains (measured: 7x the CPU time of one thread for one evaluation under
load), and CI runs the suite alone.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Every test module runs on one torch thread and leaves the count as it found it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> Any:
    """scikit-learn's digits as the evaluator loads them (default split seed), loaded once per
    module: ``tensors`` returns views of the bundle's own tensors, so modules do not share them."""
    from robustnas.plugins.evaluator import load_dataset

    return load_dataset("digits")
