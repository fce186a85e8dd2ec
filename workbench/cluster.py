"""Run many reports at once on Dask distributed: the executor behind ``workbench sweep`` and
``workbench report --workers N``.

A *job* is one notebook with one set of parameters and the folder its report goes to. Jobs run on Dask
workers (a :class:`~distributed.LocalCluster` on this machine by default, or any existing cluster given by
its scheduler address); each worker executes the notebook with papermill in its own temporary folder and
sends the finished files back (:class:`~workbench.reports.RenderedReport`). Only this process writes the
output folders, with the same atomic rules as ``workbench report``, so a worker on another machine needs the
package and the data, but no shared file system. A job that fails, or whose worker dies, becomes a failed
report; it never stops the other jobs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from workbench.errors import WorkbenchError
from workbench.reports import (NotebookInfo, RenderedReport, ReportResult, failed_rendering, install_report,
                               remove_stale_scratch, render_report)


@dataclass(frozen=True)
class Job:
    """One report to make: ``info``'s notebook run with ``parameters``, installed into ``output_dir``."""

    key: str  # unique within a batch; names the run in messages and in Dask's task keys
    info: NotebookInfo
    parameters: dict[str, Any]
    output_dir: Path


def default_threads(workers: int) -> int:
    """Threads per kernel so that ``workers`` kernels side by side use the cores once, not ``workers`` times."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A connected :class:`distributed.Client`: to ``scheduler`` when given, else to a new LocalCluster.

    The LocalCluster has ``workers`` single-threaded worker processes (one kernel each: the kernel does the
    work, a worker thread only waits for it) and no dashboard, so it opens no port beyond loopback.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise WorkbenchError("Dask distributed is not installed: `.venv/bin/pip install -e .`") from exc

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise WorkbenchError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}). Start one with `dask scheduler` and "
                "at least one `dask worker ADDRESS` (with this package installed), or leave out --scheduler to "
                "run on this machine."
            ) from None
        with client:
            yield client
        return
    n = workers or 1
    if n < 1:
        raise WorkbenchError(f"--workers must be at least 1; got {n}.")
    # silence_logs: every failed run is reported by run_jobs itself; distributed's own messages while the
    # cluster shuts down (heartbeats to a scheduler that has just closed) would only bury that.
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                           host="127.0.0.1", silence_logs=logging.CRITICAL)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def worker_threads(client: Any) -> int:
    """How many tasks the cluster runs at once (the sum of its workers' threads)."""
    return sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()) or 1


def _render_on_worker(info: NotebookInfo, parameters: dict[str, Any], source: str,
                      threads: int | None) -> RenderedReport:
    """Runs on a Dask worker: execute and convert in the worker's temporary folder, return the files."""
    return render_report(info, parameters, source=source, progress_bar=False, threads=threads)


def run_jobs(jobs: Sequence[Job], client: Any, *, threads: int | None,
             on_result: Callable[[Job, ReportResult], None] | None = None,
             desc: str = "runs", progress_bar: bool = True) -> list[ReportResult]:
    """Run ``jobs`` on ``client``'s cluster and install each report as soon as it arrives.

    ``on_result(job, result)`` is called in this process after each report is in place (e.g. to update an
    index). One progress bar counts runs done, failed and running. Results come back in ``jobs`` order.
    Ctrl-C (or SIGTERM, which the CLI turns into the same exception) cancels what has not finished.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    started = time.time()
    for folder in {job.output_dir for job in jobs}:
        remove_stale_scratch(folder, older_than=started)
    sources = {job.info.path: job.info.path.read_text(encoding="utf-8") for job in jobs}
    futures = {}
    for job in jobs:
        future = client.submit(_render_on_worker, job.info, job.parameters, sources[job.info.path], threads,
                               key=f"workbench-{job.key}-{time.time_ns()}", pure=False)
        futures[future] = job
    capacity = worker_threads(client)
    results: dict[str, ReportResult] = {}
    failed = 0
    bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress_bar, position=0)
    try:
        for future in as_completed(futures):
            job = futures[future]
            try:
                rendered = future.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker or task is one failed run, not the end
                rendered = failed_rendering(job.info, job.parameters, f"{type(exc).__name__}: {exc}")
            result = install_report(rendered, job.output_dir)
            results[job.key] = result
            failed += result.status != "ok"
            if on_result is not None:
                on_result(job, result)
            remaining = len(jobs) - len(results)
            bar.update(1)
            bar.set_postfix_str(f"ok {len(results) - failed} · failed {failed} · running {min(remaining, capacity)}")
            mark = "✓" if result.status == "ok" else "✗"
            tqdm.write(f"{mark} {job.key}: {result.status} in {result.wall_s:.1f} s"
                       + (f"  ({result.error})" if result.error else ""))
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        bar.close()
    return [results[job.key] for job in jobs]
