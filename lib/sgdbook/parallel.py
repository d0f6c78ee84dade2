"""Independent CPU jobs on every core: a process pool of one-thread workers.

Many small runs (the stand-ins' SGD runs of a sweep, each with its own seed) neither batch well
on a CPU (``vmap`` over per-run convolution weights measured 0.8–1.4× a plain loop at the walk
chapters' sizes) nor use two cores well inside one process: two torch threads ran them between
1.4× faster and 2.7× slower than one, depending on what else the process had done, and spin
whenever another process holds a core. One process per core with one thread each ran them
1.5–1.75× faster than a one-thread loop on two cores (chapter 03; the performance appendix
times it). :func:`run_jobs` maps an importable function over jobs in such a pool and returns the
results in order.

- The pool is started once per worker count (``spawn``: the workers import the library afresh,
  nothing of the notebook is inherited) and kept for the session; tensors travel through shared
  memory.
- Jobs are independent: each seeds its own generators, so the results do not depend on the
  order in which workers pick them up, nor on their number: on the CPU every job runs with one
  thread, in the pool or here. (Two threads reduce in another order, and SGD amplifies the last
  bits: 150 steps of the walk chapters' CNN moved θ by up to 0.1.)
- ``workers`` (default: the environment variable ``SGDBOOK_WORKERS``, else :func:`usable_cores`):
  with one worker or a single job the jobs run in this process, in order; on a device other than
  the CPU too, with its own threads (a GPU is not shared between processes here).
- A job's error is raised here with a note naming the job (and the worker's traceback as its
  cause). An interrupt (Ctrl-C, Jupyter's stop button) cancels the jobs not started and stops the
  workers; the next call starts a fresh pool.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

from .book.progress import progress

#: The environment variable that sets the number of worker processes (``1``: no pool).
WORKERS_ENV = "SGDBOOK_WORKERS"

_POOLS: dict[int, ProcessPoolExecutor] = {}


def usable_cores() -> int:
    """The number of cores this process may use (its CPU affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """``SGDBOOK_WORKERS`` if set, else :func:`usable_cores`."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if not env:
        return usable_cores()
    try:
        n = int(env)
    except ValueError:
        raise ValueError(f"{WORKERS_ENV} must be a whole number of worker processes, got {env!r}") from None
    if n < 1:
        raise ValueError(f"{WORKERS_ENV} must be at least 1, got {n}")
    return n


def check_sendable(obj, what: str) -> None:
    """Raise a ValueError, naming ``what``, if ``obj`` cannot reach a worker process: it does not
    pickle (a lambda), or it is (or wraps, through ``functools.partial``) a function defined in
    ``__main__`` (a notebook's or script's own ``def``), which a ``spawn`` worker cannot import."""
    fn = obj
    while isinstance(fn, functools.partial):
        fn = fn.func
    if getattr(fn, "__module__", None) == "__main__":
        raise ValueError(f"{what} ({getattr(fn, '__qualname__', fn)!r}) is defined in __main__ (a notebook or script), "
                         "which a worker process cannot import: use a library function, or a functools.partial of one")
    try:
        pickle.dumps(obj)
    except Exception as err:
        raise ValueError(f"{what} cannot be sent to a worker process ({err}): use a library function, or a "
                         "functools.partial of one") from None


def _init_worker() -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is the parent's to handle (a kernel sends it to the group)
    torch.set_num_threads(1)
    os.environ["SGDBOOK_PROGRESS"] = "off"  # a worker draws no progress bar of its own


def _pool(workers: int) -> ProcessPoolExecutor:
    if workers not in _POOLS:
        _POOLS[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                              initializer=_init_worker)
    return _POOLS[workers]


def _drop(workers: int, *, stop: bool) -> None:
    """Forget the pool of ``workers`` (broken, or interrupted); ``stop`` ends its workers now."""
    pool = _POOLS.pop(workers, None)
    if pool is None:
        return
    if stop:
        for proc in list(getattr(pool, "_processes", {}).values()):  # the workers ignore SIGINT
            proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def shutdown() -> None:
    """Stop the pools (also at exit)."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)


def _call(fn: Callable, job) -> Any:
    return fn(**job) if isinstance(job, dict) else fn(*job)


def _submit_all(workers: int, fn: Callable, jobs: list) -> list:
    try:
        pool = _pool(workers)
        return [pool.submit(_call, fn, job) for job in jobs]
    except BrokenProcessPool:  # broke while idle (e.g. a worker killed): once more with a fresh pool
        _drop(workers, stop=False)
        pool = _pool(workers)
        return [pool.submit(_call, fn, job) for job in jobs]


def run_jobs(fn: Callable, jobs: Sequence, *, workers: int | None = None, device=None, desc: str = "",
             label: Callable[[Any], str] | None = None) -> list:
    """``[fn(*job) or fn(**job) for job in jobs]`` (a tuple of arguments or a dict of keywords per
    job), in a pool of ``workers`` one-thread processes when that is worth it (see the module),
    else here. ``fn`` must be importable (a library's top-level function, or a
    ``functools.partial`` of one: :func:`check_sendable`). ``desc``: a progress bar over the
    finished jobs. ``label(job)`` names a job in the note added to its error (default: its
    arguments)."""
    jobs = list(jobs)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    on_cpu = device is None or str(device).split(":")[0] == "cpu"
    if not on_cpu:
        return [_call(fn, job) for job in progress(jobs, desc=desc)]
    if workers <= 1 or len(jobs) <= 1:  # one thread here too: the same numbers as in the pool
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [_call(fn, job) for job in progress(jobs, desc=desc)]
        finally:
            torch.set_num_threads(before)
    check_sendable(fn, "the job function")
    futures = _submit_all(workers, fn, jobs)
    out = []
    try:
        for job, fut in progress(zip(jobs, futures), desc=desc, total=len(jobs)):
            try:
                out.append(fut.result())
            except Exception as err:
                broken = isinstance(err, BrokenProcessPool)
                if broken:  # a worker died (e.g. out of memory): start afresh next time
                    _drop(workers, stop=False)
                err.add_note(f"in the job {label(job) if label is not None else repr(job)[:300]}"
                             + ("; a worker process died: out of memory, or a script that starts workers outside "
                                "`if __name__ == '__main__':`; SGDBOOK_WORKERS=1 runs the jobs in this process"
                                if broken else ""))
                raise
    except BaseException as err:
        for f in futures:
            f.cancel()
        if isinstance(err, KeyboardInterrupt):  # the running jobs would go on: stop the workers
            _drop(workers, stop=True)
        raise
    return out
