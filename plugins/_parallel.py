"""Where a comparison's tasks run: in this process, one after the other, or on Ray.

A comparison is made of independent tasks (the search of one (strategy, seed) unit, the
retraining of one architecture it returned). :func:`open_executor` gives the object that runs
them: :class:`InProcess` (``jobs == 1`` and no cluster: the comparison runs exactly as it always
did, nothing to install) or :class:`RayExecutor` (``jobs > 1`` or a ``cluster`` address): Ray
(Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI 2018) runs each
task as a remote task of one CPU, and of a share of a GPU where the cluster has GPUs, in worker
processes of a private local instance (``address="local"``) or of an existing cluster.

Why Ray and not Dask distributed: docs/compare.md, "Many processes and machines" (measured by
``benchmarks/bench_jobs.py``). Both executors give the same answer for the same task: each
task seeds itself before it builds anything, so where and in which order it runs does not
change its result.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import socket
import time
from collections import deque
from typing import Any, Callable, Hashable

from robustnas.plugins.errors import ConfigError

_logger = logging.getLogger(__name__)

#: How to install the engine (the ``ray`` extra: Ray with its client, for ``ray://`` addresses).
INSTALL_HINT = "pip install 'robustnas[ray]'"
#: Seconds to wait for a TCP connection to a cluster address before calling it unreachable.
CONNECT_TIMEOUT = 5.0
#: Object store of the private local instance: tasks exchange small JSON-able dicts only.
_LOCAL_OBJECT_STORE_BYTES = 128 * 1024 * 1024

_HOST_PORT = re.compile(r"^(?P<scheme>ray://)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


def engine_available() -> bool:
    """Whether Ray can be imported (without importing it)."""
    return importlib.util.find_spec("ray") is not None


def validate_cluster(address: Any) -> None:
    """Refuse a cluster address that is not ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` (ConfigError).

    ``auto``: the Ray cluster this machine belongs to (``ray start`` ran here); ``HOST:PORT``:
    the cluster's head (GCS) address, from a machine of the cluster; ``ray://HOST:PORT``: the Ray
    Client server of the head (port 10001 by default), from any machine.
    """
    valid = "'auto', 'HOST:PORT' (the head's GCS address) or 'ray://HOST:PORT' (the head's Ray Client server)"
    if not isinstance(address, str) or not address:
        raise ConfigError(f"cluster must be a Ray cluster address: {valid}; got {address!r}")
    if address == "auto":
        return
    match = _HOST_PORT.match(address)
    if not match:
        raise ConfigError(f"cluster address {address!r} is not valid; valid forms: {valid}")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ConfigError(f"cluster address {address!r}: port {port} is out of range 1-65535")


def validate_jobs(jobs: Any, cluster: str | None) -> None:
    """``jobs`` must be a positive integer; more than one job, or a cluster, needs Ray installed."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive integer (tasks running at once), got {jobs!r}")
    if cluster is not None:
        validate_cluster(cluster)
    if (jobs > 1 or cluster is not None) and not engine_available():
        what = f"jobs={jobs}" if cluster is None else f"cluster={cluster!r}"
        raise ConfigError(f"{what} runs the comparison on Ray, which is not installed; install it with "
                          f"`{INSTALL_HINT}`, or use jobs=1 (one process, no engine)")


def gpus_per_task(cluster_gpus: float, jobs: int, wants_gpu: bool) -> float:
    """The GPU share each task asks for: none without GPUs (or on ``device: cpu``), else an equal
    share of the cluster's GPUs among ``jobs`` tasks, at most one GPU each."""
    if not wants_gpu or cluster_gpus <= 0:
        return 0.0
    return min(1.0, float(cluster_gpus) / jobs)


# ---------------------------------------------------------------------------- executors
#: What ``next_done`` returns: the task's key, ``"ok"`` or ``"lost"``, and its value or the exception.
Outcome = tuple[Hashable, str, Any]


class InProcess:
    """Runs each task in this process when its result is asked for, in submission order."""

    #: Tasks run in the calling process (the caller may show their own progress bars).
    remote = False
    description = "this process"

    def __init__(self) -> None:
        self._tasks: deque[tuple[Hashable, Callable[..., Any], tuple[Any, ...]]] = deque()

    @property
    def running(self) -> int:
        return len(self._tasks)

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        self._tasks.append((key, fn, args))

    def next_done(self) -> Outcome:
        key, fn, args = self._tasks.popleft()
        return key, "ok", fn(*args)

    def close(self) -> None:
        self._tasks.clear()


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """The body of every Ray task: one torch thread (workers share the cores), then the task."""
    import torch

    torch.set_num_threads(1)
    return fn(*args)


def _probe(address: str) -> None:
    """Refuse an address where nothing accepts a TCP connection (Ray would retry for minutes)."""
    match = _HOST_PORT.match(address)
    if not match:  # "auto": ray.init itself fails at once when no cluster runs here
        return
    host = match["host"].strip("[]")
    try:
        with socket.create_connection((host, int(match["port"])), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r} within {CONNECT_TIMEOUT:.0f} s ({exc}); "
                          "is the head running (`ray start --head`), and is the port open?") from None


class RayExecutor:
    """Runs tasks as Ray tasks: a private local instance of ``jobs`` CPUs, or an existing cluster.

    At most ``jobs`` tasks are submitted at once (the caller keeps the queue, so that it decides
    what runs next and an interruption loses only the running tasks). Each task asks for one
    CPU and, where the cluster has GPUs and ``wants_gpu``, :func:`gpus_per_task` of a GPU; Ray
    then sets ``CUDA_VISIBLE_DEVICES`` of its worker. Tasks are not retried by Ray: a task whose
    worker dies is reported ``"lost"``. A Ray session that this process had already started is
    used as it is and left running.
    """

    #: Tasks run in worker processes.
    remote = True

    def __init__(self, jobs: int, cluster: str | None = None, wants_gpu: bool = True) -> None:
        if not engine_available():
            raise ConfigError(f"Ray is not installed; install it with `{INSTALL_HINT}`")
        import ray

        self._ray = ray
        self._refs: dict[Any, Hashable] = {}
        self.jobs = jobs
        t0 = time.perf_counter()
        self._owned = not ray.is_initialized()
        if self._owned:
            quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
            if cluster is None:
                import torch

                gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
                ray.init(address="local", num_cpus=jobs, num_gpus=gpus, include_dashboard=False,
                         object_store_memory=_LOCAL_OBJECT_STORE_BYTES, **quiet)
            else:
                _probe(cluster)
                try:
                    ray.init(address=cluster, **quiet)
                except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
                    raise ConfigError(f"cannot connect to the Ray cluster at {cluster!r}: "
                                      f"{type(exc).__name__}: {exc}") from None
        self.start_seconds = time.perf_counter() - t0
        resources = ray.cluster_resources()
        self.gpus = float(resources.get("GPU", 0.0))
        self.num_gpus = gpus_per_task(self.gpus, jobs, wants_gpu)
        self._remote = ray.remote(_call).options(num_cpus=1, num_gpus=self.num_gpus, max_retries=0)
        where = "a local Ray instance" if cluster is None else f"the Ray cluster at {cluster}"
        self.description = (f"{where} ({resources.get('CPU', 0):g} CPU, {self.gpus:g} GPU; "
                            f"{self.num_gpus:g} GPU per task), ready in {self.start_seconds:.1f} s")
        _logger.info("running tasks on %s", self.description)

    @property
    def running(self) -> int:
        return len(self._refs)

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        self._refs[self._remote.remote(fn, args)] = key

    def next_done(self) -> Outcome:
        ready, _ = self._ray.wait(list(self._refs), num_returns=1)
        key = self._refs.pop(ready[0])
        try:
            return key, "ok", self._ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001 - the worker died or the task was cancelled: its task is lost
            _logger.error("task %s was lost: %s", key, exc)
            return key, "lost", exc

    def close(self) -> None:
        """Cancel the running tasks (their workers are killed) and stop the instance this started."""
        for ref in list(self._refs):
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or its worker already gone
                pass
        self._refs.clear()
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()


def open_executor(jobs: int, cluster: str | None, wants_gpu: bool) -> InProcess | RayExecutor:
    """:class:`InProcess` for one job without a cluster, else :class:`RayExecutor` (ConfigError when
    Ray is missing or the cluster cannot be reached)."""
    validate_jobs(jobs, cluster)
    if jobs == 1 and cluster is None:
        return InProcess()
    return RayExecutor(jobs, cluster, wants_gpu)
