"""A campaign on a dask.distributed cluster (``smmu check --workers N`` / ``--scheduler
ADDRESS``): :func:`cluster` opens one (a ``LocalCluster`` of N worker processes, or a client
of a running scheduler), :func:`explore_on` runs :class:`~smmu.explore.shards.PairCampaign`
shards on it (each a call of :func:`~smmu.explore.search.explore` on a worker) and merges
them into the serial results.

dask is an optional dependency (``pip install 'smmu[dask]'``): nothing here imports it
before it is needed, and a missing dask is a :class:`UsageError` saying how to install it.
A worker that dies while it runs a shard loses nothing: the scheduler runs the shard again
on another worker (up to ``distributed.scheduler.allowed-failures`` times, 3 by default;
a shard that kills every worker it lands on is reported, with the pair it belongs to).
"""

from __future__ import annotations

import contextlib
import logging
import uuid

from smmu.base.errors import SmmuError, UsageError
from smmu.explore.shards import run_campaign, run_shard

#: what to tell someone who asked for a cluster without dask installed
INSTALL_HINT = "pip install 'smmu[dask]'"


def _distributed():
    try:
        import distributed
    except ImportError as e:
        raise UsageError(f"--workers and --scheduler run the campaign on dask.distributed, "
                         f"which is not installed ({e}): {INSTALL_HINT}") from None
    return distributed


def _worker_version():
    """What a worker runs (smmu's version), to compare with this process's."""
    import smmu
    return smmu.__version__


def _setup_plugin(distributed, setup):
    """A worker plugin that calls ``setup()`` on every worker, those that join (or are
    restarted) later included."""

    class Setup(distributed.WorkerPlugin):
        name = "smmu-setup"

        def setup(self, worker):
            setup()

    return Setup()


@contextlib.contextmanager
def cluster(workers: int | None = None, scheduler: str | None = None, *, timeout: float = 10,
            setup=None):
    """A dask ``Client``: of a new ``LocalCluster`` of ``workers`` processes (one thread
    each, its HTTP server on a free port), closed on exit; or of the running scheduler at
    ``scheduler`` (``tcp://host:8786``), which must have at least one worker within
    ``timeout`` seconds and whose workers must run this version of smmu. ``setup()``
    (picklable) runs on every worker first (the command line configures the workers'
    logging as its own)."""
    if (workers is None) == (scheduler is None):
        raise UsageError("give either workers (a local cluster) or scheduler (an address)")
    distributed = _distributed()
    if workers is not None:
        if int(workers) < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        lc = distributed.LocalCluster(n_workers=int(workers), threads_per_worker=1,
                                      processes=True, dashboard_address=":0",
                                      silence_logs=logging.ERROR)
        try:
            with distributed.Client(lc) as client:
                if setup is not None:
                    client.register_plugin(_setup_plugin(distributed, setup))
                yield client
        finally:
            lc.close()
        return
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        raise UsageError(f"cannot reach the dask scheduler at {scheduler!r} ({e}): start one "
                         "with `dask scheduler` and workers with `dask worker ADDRESS`, and "
                         "give its address, e.g. --scheduler tcp://host:8786") from None
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (TimeoutError, OSError):
            raise UsageError(f"the dask scheduler at {scheduler!r} has no worker after "
                             f"{timeout:g} s: start some with `dask worker {scheduler}`") \
                from None
        import smmu
        try:
            versions = client.run(_worker_version)
        except ImportError as e:
            raise UsageError(f"a worker of {scheduler!r} cannot import smmu ({e}): install "
                             f"smmu {smmu.__version__} with {INSTALL_HINT} on every worker "
                             "machine") from None
        other = {w: v for w, v in versions.items() if v != smmu.__version__}
        if other:
            raise UsageError(f"workers of {scheduler!r} run another smmu than this "
                             f"{smmu.__version__}: {other}; install the same version "
                             "everywhere")
        if setup is not None:
            client.register_plugin(_setup_plugin(distributed, setup))
        yield client
    finally:
        client.close()


def workers_of(client) -> int:
    """How many workers the cluster has now."""
    return len(client.scheduler_info().get("workers", {}))


def explore_on(client, pairs, *, fn=run_shard, progress=None):
    """Run the :class:`~smmu.explore.shards.PairCampaign` ``pairs`` on ``client``'s cluster
    (``fn(task)`` runs one shard on a worker: :func:`~smmu.explore.shards.run_shard`);
    returns the merged explorations, the serial ones, in the order of ``pairs``."""
    distributed = _distributed()

    def submit(fn, task):
        sh = task["shard"]
        key = (f"smmu-{task['scenario']}-{task['api']}-{sh['part']}-{sh['start']}-"
               f"{uuid.uuid4().hex[:8]}")
        return client.submit(fn, task, key=key, pure=False)

    try:
        return run_campaign(pairs, submit, distributed.as_completed, fn=fn, progress=progress)
    except distributed.KilledWorker as e:
        raise SmmuError(f"a shard killed every worker it ran on ({e}): the driver crashes "
                        "the worker process; run that scenario without --workers to see "
                        "how") from None
