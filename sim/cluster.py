"""Shards on a Dask cluster: ``tapsim sim --cluster tcp://HOST:8786``.

The driver connects a ``distributed.Client`` to the scheduler, submits one task per shard
(:func:`sim.runner.run_shard` on the worker), and merges the results in shard order with
``sim.results.merge``, as the local pool does: a shard is a pure function of its job
(city, settings, seed, shard index), so the report is the local run's whoever runs the
shards.  That purity is also what makes a lost worker harmless: the scheduler runs its
shards again elsewhere and they give the same results.

* The city, the largest part of a job (about 350 KB for Lanshan), travels once, as a task
  of its own that every shard depends on (a task, not scattered data: if the worker holding
  it dies, the scheduler makes it again).
* Progress: each shard's worker sends its fraction done as a Dask event
  (``Worker.log_event``) on a topic of this run; the driver's client receives them.
* Ctrl-C or SIGTERM: the futures are cancelled and the client closed; a shard already
  running notices at its next progress step (1 % of its simulated day) that its task was
  cancelled and stops.
* Errors: a shard's own error (a ``SimError`` and the like) comes back as raised; a shard
  that kills its workers again and again (``allowed-failures``, 3 by default: out of
  memory?) and a scheduler that cannot be reached or is lost are :class:`ClusterError`.

Workers must run the same tapsim (same code as the driver), one thread each: a shard is
pure Python and holds the GIL, so two threads of one worker share one core
(``dask worker tcp://HOST:8786 --nworkers N --nthreads 1``).

The local runs (no ``--cluster``) keep ``sim.runner``'s own process pool rather than a Dask
``LocalCluster``: it starts in a fraction of the time (no scheduler, no nanny processes),
it stops a running shard at once on Ctrl-C, and a plain install needs no Dask.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit

from sim.city import City
from sim.errors import ConfigError, SimError
from sim.results import ShardResult
from sim.runner import ShardJob, run_shard

CONNECT_TIMEOUT_S = 10.0
"""How long to wait for the scheduler to answer before giving up (it answers in
milliseconds when it is there; a firewall that drops packets makes the wait this long)."""

SCHEMES = ("tcp", "tls")
_POLL_S = 0.1
_PROGRESS_STEP = 0.01


class ClusterError(SimError):
    """The Dask cluster could not run the shards (unreachable, lost, workers dying)."""


class _Abandoned(Exception):  # noqa: N818 - not an error: the driver gave the shard up
    """Raised inside a shard whose task was cancelled (the driver was interrupted)."""


def check_address(address: str) -> str:
    """``address`` if it names a scheduler as ``tcp://HOST:PORT`` (or ``tls://``), else a
    ConfigError saying what is wrong with it."""
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--cluster {address}: not a scheduler address ({exc})") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ConfigError(f"--cluster {address}: not a scheduler address; give "
                          "tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786")
    if port is None or port == 0:
        raise ConfigError(f"--cluster {address}: no port; the scheduler's is usually 8786 "
                          f"({parts.scheme}://{parts.hostname}:8786)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"--cluster {address}: a scheduler address has no path or query; "
                          f"give {parts.scheme}://{parts.hostname}:{port}")
    return address


def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` on the scheduler at ``address``, or a ClusterError naming it."""
    check_address(address)
    try:
        from distributed import Client  # noqa: PLC0415 - an optional dependency
    except ImportError:
        raise ConfigError("--cluster needs Dask's distributed package: pip install "
                          "'tapsim[cluster]'") from None
    try:
        return Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"--cluster {address}: no Dask scheduler answered within "
                           f"{timeout_s:g} s ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def worker_threads(client: Any) -> dict[str, int]:
    """Each worker's address and thread count, as the scheduler knows them now."""
    info = client.scheduler_info()
    return {addr: int(w.get("nthreads", 1)) for addr, w in info.get("workers", {}).items()}


def _the_city(city: City) -> City:
    """A task that holds the city once for every shard's task (top level, so it pickles)."""
    return city


def _shard_task(job: dict[str, Any], city: City, topic: str) -> ShardResult:
    """One shard on a Dask worker: its job rebuilt around the shared city, run, its progress
    sent to the driver; stopped if the driver cancels the task."""
    from distributed import get_worker  # noqa: PLC0415

    worker = get_worker()
    key = worker.get_current_task()
    shard = int(job["shard"])
    last = 0.0

    def report(fraction: float) -> None:
        nonlocal last
        if fraction - last < _PROGRESS_STEP:
            return
        last = fraction
        state = worker.state.tasks.get(key)
        if state is None or state.state == "cancelled":
            raise _Abandoned(shard)
        worker.log_event(topic, (shard, fraction))

    return run_shard(ShardJob(city=city, **job), report)


def run_on_cluster(jobs: Sequence[ShardJob], address: str,
                   progress: Callable[[dict[int, float]], None] | None = None,
                   notice: Callable[[str], None] | None = None,
                   client: Any = None) -> tuple[ShardResult, int]:
    """Run the shards on the cluster at ``address``; their merged result and the worker
    threads the cluster had when they were submitted.

    ``progress`` as for ``sim.runner.run_jobs``; ``notice`` gets advice for the user (workers
    with more than one thread).  On any exception here, KeyboardInterrupt included, the
    shards' futures are cancelled before it goes on.
    """
    if not jobs:
        raise ConfigError("no shards to run")
    own = client is None
    if own:
        client = connect(address)
    try:
        threads = worker_threads(client)
        crowded = sorted(a for a, n in threads.items() if n > 1)
        if crowded and notice is not None:
            notice(f"{len(crowded)} Dask worker(s) run more than one thread (e.g. "
                   f"{crowded[0]}: {threads[crowded[0]]}); a shard holds the GIL, so they "
                   "share a core: start workers with --nthreads 1 --nworkers N")
        return _gather(client, jobs, address, progress), sum(threads.values())
    finally:
        if own:
            client.close(timeout=2)


def _gather(client: Any, jobs: Sequence[ShardJob], address: str,
            progress: Callable[[dict[int, float]], None] | None) -> ShardResult:
    from distributed import KilledWorker  # noqa: PLC0415

    from sim.results import merge  # noqa: PLC0415

    run = uuid.uuid4().hex[:12]
    topic = f"tapsim-sim-{run}"
    done: dict[int, float] = {j.shard: 0.0 for j in jobs}
    reported: dict[int, float] = {}  # written by the client's thread (events), read here

    def on_event(event: tuple[float, Any]) -> None:
        shard, fraction = event[1]
        reported[int(shard)] = float(fraction)

    if progress is not None:
        progress(done)
    client.subscribe_topic(topic, on_event)
    futures: dict[int, Any] = {}
    try:
        city = client.submit(_the_city, jobs[0].city, key=f"tapsim-city-{run}", pure=False)
        for job in jobs:
            rest = {f.name: getattr(job, f.name) for f in fields(job) if f.name != "city"}
            futures[job.shard] = client.submit(_shard_task, rest, city, topic,
                                               key=f"tapsim-shard-{job.shard}-{run}",
                                               pure=False)
        results: dict[int, ShardResult] = {}
        while len(results) < len(jobs):
            changed = False
            for shard, fut in futures.items():
                if shard in results:
                    continue
                status = fut.status
                if status == "finished":
                    results[shard] = fut.result()
                    done[shard] = 1.0
                    changed = True
                elif status == "error":
                    fut.result()  # raises the shard's own error
                elif status in ("cancelled", "lost"):
                    raise ClusterError(f"--cluster {address}: lost the scheduler with "
                                       f"{len(jobs) - len(results)} of {len(jobs)} shards "
                                       "unfinished")
                elif reported.get(shard, 0.0) != done[shard]:
                    done[shard] = reported[shard]
                    changed = True
            if changed and progress is not None:
                progress(done)
            if len(results) < len(jobs):
                time.sleep(_POLL_S)
        return merge([results[j.shard] for j in jobs])
    except KilledWorker as exc:
        raise ClusterError(f"--cluster {address}: a shard's task killed every worker that "
                           f"ran it ({_reason(exc)}); out of memory? Give workers more "
                           "memory or use more --shards") from None
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"--cluster {address}: lost the scheduler ({_reason(exc)})") from None
    finally:
        if futures:
            try:
                client.cancel(list(futures.values()), force=True)
            except Exception:  # noqa: S110 - the scheduler may be gone already
                pass
        try:
            client.unsubscribe_topic(topic)
        except Exception:  # noqa: S110
            pass
