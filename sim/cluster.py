"""Shards on a Dask cluster: ``tapsim sim --cluster tcp://HOST:8786``.

The driver connects a ``distributed.Client`` to the scheduler, submits one task per shard
(:func:`sim.runner.run_shard` on the worker), and merges the results in shard order with
``sim.results.merge``, as the local pool does: a shard is a pure function of its job
(city, settings, seed, shard index), so the report is the local run's whoever runs the
shards.  That purity is also what makes a lost worker harmless: the scheduler runs its
shards again elsewhere and they give the same results.

* Each shard is a task with its whole job in it (Lanshan's: about 370 KB, mostly the city),
  submitted one by one: a task without dependencies goes to the least busy worker, and the
  scheduler can run it again from what it holds if its worker dies.  (The city as a task of
  its own that every shard depends on would travel once, but drew the shards to the worker
  holding it: three of four on one worker of two.)
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

import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

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


def connect(address: str, timeout_s: float | None = None) -> Any:
    """A ``distributed.Client`` on the scheduler at ``address``, or a ClusterError naming it
    (after ``timeout_s``, default ``CONNECT_TIMEOUT_S``)."""
    check_address(address)
    if timeout_s is None:
        timeout_s = CONNECT_TIMEOUT_S
    try:
        from distributed import Client  # noqa: PLC0415 - an optional dependency
    except ImportError:
        raise ConfigError("--cluster needs Dask's distributed package: pip install "
                          "'tapsim[cluster]'") from None
    try:
        return Client(address, timeout=timeout_s,  # type: ignore[no-untyped-call]
                      set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"--cluster {address}: no Dask scheduler answered within "
                           f"{timeout_s:g} s ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


PACKAGES = ("emv", "fare", "issuer", "backoffice", "terminal", "wire", "sim", "tapsim")


def code_id() -> str:
    """tapsim's version and a hash of its packages' sources: what a worker must share with
    the driver for its shards to be the driver's (a worker keeps the modules it imported
    first, so one started before an upgrade runs the old code)."""
    import hashlib  # noqa: PLC0415
    import importlib.util  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from tapsim import __version__  # noqa: PLC0415

    h = hashlib.sha256(__version__.encode())
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for root in (spec.submodule_search_locations or []) if spec else []:
            for path in sorted(Path(root).rglob("*.py")):
                h.update(f"{name}/{path.relative_to(root).as_posix()}\0".encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _worker_code_id() -> str:
    """``code_id`` as a worker computes it (by reference: the worker's own code runs)."""
    return code_id()


def check_workers(client: Any, address: str) -> None:
    """A ClusterError if a worker runs other tapsim code than this driver, or none."""
    try:
        ids: dict[str, str] = client.run(_worker_code_id)
    except ImportError as exc:
        raise ClusterError(f"--cluster {address}: a worker cannot import tapsim ({exc}); "
                           "install the driver's tapsim on every worker") from None
    mine = code_id()
    other = sorted(w for w, i in ids.items() if i != mine)
    if other:
        raise ClusterError(f"--cluster {address}: {len(other)} of {len(ids)} worker(s) run "
                           f"other tapsim code than this driver (e.g. {other[0]}); install "
                           "the same tapsim on every worker and restart them")


def worker_threads(client: Any) -> dict[str, int]:
    """Each worker's address and thread count, as the scheduler knows them now."""
    info = client.scheduler_info()
    return {addr: int(w.get("nthreads", 1)) for addr, w in info.get("workers", {}).items()}


def _shard_task(job: ShardJob, topic: str) -> ShardResult:
    """One shard on a Dask worker, its progress sent to the driver; stopped if the driver
    cancels the task."""
    from distributed import get_worker  # noqa: PLC0415

    worker = get_worker()
    key = worker.get_current_task()
    shard = job.shard
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

    return run_shard(job, report)


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
        check_workers(client, address)
        threads = worker_threads(client)
        if not threads and notice is not None:
            notice(f"the scheduler at {address} has no workers yet: the shards wait for them")
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
        for job in jobs:
            futures[job.shard] = client.submit(_shard_task, job, topic,
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
        with contextlib.suppress(Exception):  # the scheduler may be gone already
            if futures:
                client.cancel(list(futures.values()), force=True)
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)
