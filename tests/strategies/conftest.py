"""Fixtures for the one-shot strategy tests (ARNAS, DSRNA): tiny digits searches in a real NasExperiment."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
import torch
from pytorch_lightning import Callback


class ArchSnapshot(Callback):
    """Copies the architecture parameters when training starts (to see that they moved)."""

    def __init__(self) -> None:
        self.initial: list[torch.Tensor] = []
        self.params: list[torch.nn.Parameter] = []
        #: ``max_change()`` at the end of every training epoch
        self.epoch_changes: list[float] = []

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.params = list(pl_module.arch_parameters())
        self.initial = [p.detach().clone() for p in self.params]

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.epoch_changes.append(self.max_change())

    def max_change(self) -> float:
        return max(float((p.detach() - p0).abs().max()) for p, p0 in zip(self.params, self.initial))


def _run_search(space_cls: type, space_kwargs: dict[str, Any], strategy: Any, *, steps: int, tmp_path: Any,
               seed: int = 0, batch_size: int = 16, epochs: int = 1) -> ArchSnapshot:
    """Run ``strategy`` on a tiny ``space_cls`` over digits in a NasExperiment; returns the snapshot."""
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.experiment import NasExperiment

    from robustnas.plugins.evaluator import load_dataset

    bundle = load_dataset("digits")
    torch.manual_seed(seed)
    space = space_cls(input_shape=bundle.input_shape, num_classes=bundle.num_classes, **space_kwargs)
    snapshot = ArchSnapshot()
    evaluator = Classification(
        train_dataloaders=DataLoader(bundle.train, batch_size=batch_size, shuffle=True),
        val_dataloaders=DataLoader(bundle.val, batch_size=batch_size, shuffle=True),
        num_classes=bundle.num_classes, max_epochs=epochs, limit_train_batches=steps, accelerator="cpu",
        enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
        callbacks=[snapshot],
    )
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            experiment.run()
        finally:
            experiment.stop()  # NNI otherwise stops it at exit, after pytest closed its streams
    return snapshot


@pytest.fixture(scope="module")
def single_thread(one_torch_thread: None) -> None:
    """Torch on one thread for a test module: tests/conftest.py's ``one_torch_thread``, under the
    name this folder's modules ask for."""


@pytest.fixture(scope="module")
def one_shot_search():
    """``one_shot_search(space_cls, space_kwargs, strategy, steps=..., tmp_path=...)`` runs a tiny
    search on digits (single-threaded) and returns an :class:`ArchSnapshot` of the start."""

    def run(*args: Any, **kwargs: Any) -> ArchSnapshot:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        logging.getLogger("nni").setLevel(logging.WARNING)
        try:
            return _run_search(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return run
