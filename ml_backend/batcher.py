"""Collect the tasks of concurrent /predict requests into shared model batches, fairly.

A request is a job of tasks. Admission is bounded in tasks: past `queue_size` tasks waiting
or running, a request is refused at once (the route answers 503 + Retry-After).

A task's image is fetched in a bounded download pool of its own (never the server's threadpool),
a few tasks ahead of the model, and decoded only when its batch runs. Both the fetches and the
batches take tasks round-robin across jobs (while several jobs wait, each gets at most its equal
share of a batch, and of the download workers), so a 1-task request is served in the batch after
the one running when it arrives, even while a 500-task request runs. Downloads from one host are
limited (`per_host`), so requests whose images trickle in from a slow host hold only that host's
share of the workers, and a request's downloads that have not started when its deadline passes
never start. A job that is cancelled (its client went away) or whose
deadline passed (Label Studio stopped waiting) has its remaining tasks dropped.

When a batch fails in the model, its tasks are retried in halves down to single tasks, so only
a task that fails on its own gets an error (its reason), and the others get candidates.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Hashable, Protocol, Sequence, runtime_checkable

from illume.errors import IllumeError
from illume.records import Candidate
from illume.vlm import Query
from ml_backend.settings import Settings

log = logging.getLogger(__name__)

# run_batch(queries) -> (candidates per query, version of the model that produced them)
RunBatch = Callable[[Sequence[Query]], "tuple[list[list[Candidate]], str]"]
GATHER_S = 0.05  # how long a batch waits for fetches already under way before it runs without them
LATE_FETCH = "the request's deadline passed before its image was fetched"
HOST_SCAN = 64  # tasks of a job looked at for one on a host with a free slot


class QueueFull(Exception):
    """Too many tasks are waiting; the caller should retry later."""


@runtime_checkable
class Pending(Protocol):
    """A task whose input must be fetched (I/O, download pool) and built (decoding, at batch time)."""

    def fetch(self) -> Any: ...

    def build(self, fetched: Any) -> Query: ...


@dataclass
class BatchResult:
    candidates: list[list[Candidate]]
    versions: list[str | None]
    errors: list[str | None]  # why a task got no candidates (None when it got them)


@dataclass(eq=False)
class Job:
    items: Sequence[Any]
    deadline: float | None = None  # time.monotonic() after which its waiting tasks are dropped
    future: Future = field(default_factory=Future)
    dropped: str | None = None  # why its waiting tasks were dropped

    def __post_init__(self) -> None:
        count = len(self.items)
        self.candidates: list = [[] for _ in range(count)]
        self.versions: list = [None] * count
        self.errors: list = [None] * count
        self.remaining = count
        self.unfetched = deque(range(count))
        self.fetching = 0
        self.ready: deque[tuple[int, Callable[[], Query]]] = deque()  # (index, build its query)

    def result(self) -> BatchResult:
        return BatchResult(self.candidates, self.versions, self.errors)


class Batcher:
    def __init__(self, run_batch: RunBatch, batch_size: int, queue_size: int,  # ml_backend.settings.Settings
                 download_workers: int = Settings.__dataclass_fields__["download_workers"].default,
                 prefetch: int | None = None, per_host: int | None = None) -> None:
        if batch_size < 1 or queue_size < 1 or download_workers < 1 or (per_host or 1) < 1:
            raise ValueError("batch_size, queue_size, download_workers and per_host must be at least 1")
        self.run_batch = run_batch
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.prefetch = max(prefetch or 2 * batch_size, batch_size)  # tasks fetched ahead of the model
        self.download_workers = download_workers
        self.per_job_fetches = max(1, download_workers // 2)  # no job holds every download worker
        self.per_host = per_host or download_workers  # None: no limit per host
        self._fetching = 0  # fetches under way, all jobs
        self._host_fetches: Counter = Counter()  # fetches under way per host
        self._downloads = ThreadPoolExecutor(download_workers, thread_name_prefix="illume-download")
        self._jobs: list[Job] = []  # live jobs, the next one to serve first
        self._tasks = 0  # tasks admitted and not finished
        self._ahead = 0  # tasks being fetched or fetched and waiting for the model
        self._cond = threading.Condition()
        self._stopped = False
        self._worker = threading.Thread(target=self._loop, name="illume-batcher", daemon=True)
        self._worker.start()

    @property
    def jobs_in_flight(self) -> int:
        with self._cond:
            return len(self._jobs)

    @property
    def tasks_in_flight(self) -> int:
        with self._cond:
            return self._tasks

    def submit(self, items: Sequence[Any], deadline: float | None = None) -> "Future[BatchResult]":
        """Queue a request's tasks (Query objects, or Pending ones to fetch and build first)."""
        job = Job(list(items), deadline)
        if not job.items:
            job.future.set_result(job.result())
            return job.future
        with self._cond:
            if self._stopped:
                raise RuntimeError("the batcher is stopped")
            if self._tasks + len(job.items) > self.queue_size:
                raise QueueFull(f"{self._tasks} tasks are already waiting or running, and this request adds "
                                f"{len(job.items)} (limit {self.queue_size})")
            self._tasks += len(job.items)
            self._jobs.append(job)
            self._dispatch()
            self._cond.notify_all()
        return job.future

    def cancel(self, future: Future, reason: str) -> None:
        """Drop the tasks of the request behind `future` that have not reached the model."""
        with self._cond:
            for job in self._jobs:
                if job.future is future:
                    self._drop(job, reason)
            self._cond.notify_all()

    def stop(self) -> None:
        """Finish the running batch, fail the requests still waiting."""
        with self._cond:
            self._stopped = True
            for job in list(self._jobs):
                self._drop(job, "the backend is shutting down")
            self._cond.notify_all()
        self._worker.join(timeout=30)
        self._downloads.shutdown(wait=False, cancel_futures=True)
        with self._cond:
            for job in self._jobs:
                if not job.future.done():
                    job.future.set_exception(RuntimeError("the backend is shutting down"))

    # ------------------------------------------------------------------ fetching (under the lock)
    def _dispatch(self) -> None:
        """Start fetches while a download worker is free (nothing waits inside the pool, so each
        choice is made when a worker frees up, with every request's deadline known):

        - a job past its deadline is dropped first, so its queued downloads never start;
        - the job with the fewest fetches under way goes first, and none holds more than its
          share of the workers (the pool split across the jobs that want downloads);
        - at most `per_host` fetches run against one host (Label Studio and the local disk count
          as one host each), so a slow host ties up only its own share of the workers;
        - fewer than `prefetch` tasks are ahead of the model, except that a job with nothing ahead
          may go past it (by up to a batch), so a new request's first task is fetched at once."""
        self._expire()
        while (choice := self._next_fetch()) is not None:
            job, index = choice
            self._ahead += 1
            item = job.items[index]
            if isinstance(item, Pending):
                host = _host_of(item)
                job.fetching += 1
                self._fetching += 1
                self._host_fetches[host] += 1
                self._downloads.submit(self._fetch, job, index, item, host)
            else:
                job.ready.append((index, partial(_as_is, item)))

    def _next_fetch(self) -> tuple[Job, int] | None:
        wanting = [job for job in self._jobs if job.unfetched and not job.dropped]
        if not wanting:
            return None
        share = min(self.per_job_fetches, max(1, -(-self.download_workers // len(wanting))))
        for job in sorted(wanting, key=lambda job: job.fetching):  # stable: rotation order among equals
            nothing_ahead = not job.ready and not job.fetching
            if self._ahead >= self.prefetch + (self.batch_size if nothing_ahead else 0):
                continue
            for position, index in enumerate(itertools.islice(job.unfetched, HOST_SCAN)):
                item = job.items[index]
                if isinstance(item, Pending) and (job.fetching >= share or self._fetching >= self.download_workers
                                                  or self._host_fetches[_host_of(item)] >= self._host_limit(item)):
                    continue
                del job.unfetched[position]
                return job, index
        return None

    def _host_limit(self, item: Pending) -> int:
        return self.download_workers if _host_of(item) is None else self.per_host

    def _fetch(self, job: Job, index: int, item: Pending, host: Hashable) -> None:
        late = job.dropped or (job.deadline is not None and time.monotonic() > job.deadline)
        error = None
        if late:  # dropped while it waited for a worker: never started
            fetched = None
        else:
            try:
                fetched = item.fetch()
            except Exception as exc:  # an image that cannot be fetched fails its task only
                fetched, error = None, _reason(exc)
        with self._cond:
            job.fetching -= 1
            self._fetching -= 1
            self._host_fetches[host] -= 1
            self._ahead -= 1
            if job in self._jobs:
                if late or job.dropped:
                    self._settle(job, index, [], None, f"dropped: {job.dropped or LATE_FETCH}")
                elif error is not None:
                    self._settle(job, index, [], None, error)
                else:
                    self._ahead += 1
                    job.ready.append((index, partial(item.build, fetched)))
            self._dispatch()
            self._cond.notify_all()

    # ------------------------------------------------------------------ results (under the lock)
    def _settle(self, job: Job, index: int, candidates: list, version: str | None, error: str | None) -> None:
        job.candidates[index], job.versions[index], job.errors[index] = candidates, version, error
        job.remaining -= 1
        self._tasks -= 1
        if job.remaining == 0:
            self._jobs.remove(job)
            job.future.set_result(job.result())

    def _drop(self, job: Job, reason: str) -> None:
        """Fail every task of the job that is not in the model now (and those still being fetched, later)."""
        job.dropped = reason
        self._ahead -= len(job.ready)
        for index in [i for i, _ in job.ready] + list(job.unfetched):
            self._settle(job, index, [], None, f"dropped: {reason}")
        job.ready.clear()
        job.unfetched.clear()

    def _expire(self) -> None:
        now = time.monotonic()
        for job in list(self._jobs):
            if job.deadline is not None and now > job.deadline and not job.dropped:
                self._drop(job, "the request's deadline passed before this task reached the model")

    # ------------------------------------------------------------------ the model worker
    def _take(self) -> list[tuple[Job, int, Any]] | None:
        with self._cond:
            gather_until = None
            while True:
                if self._stopped:
                    return None
                self._expire()
                ready = sum(len(job.ready) for job in self._jobs)
                fetching = sum(job.fetching for job in self._jobs)
                if ready and (ready >= self.batch_size or not fetching
                              or (gather_until is not None and time.monotonic() >= gather_until)):
                    break
                if ready and gather_until is None:
                    gather_until = time.monotonic() + GATHER_S
                self._cond.wait(timeout=GATHER_S if ready else 1.0)
            batch: list[tuple[Job, int, Any]] = []
            waiting = [job for job in self._jobs if job.ready]
            share = -(-self.batch_size // len(waiting))  # while several requests wait, none fills the batch alone
            taken = dict.fromkeys(map(id, waiting), 0)
            while len(batch) < self.batch_size and any(job.ready and taken[id(job)] < share for job in waiting):
                for job in waiting:  # one task per job per round
                    if job.ready and taken[id(job)] < share and len(batch) < self.batch_size:
                        index, item = job.ready.popleft()
                        batch.append((job, index, item))
                        taken[id(job)] += 1
            self._ahead -= len(batch)
            served = {id(job) for job, _, _ in batch}  # rotate: jobs just served go to the back
            self._jobs.sort(key=lambda job: id(job) in served)
            self._dispatch()
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            built, failed = [], []
            for job, index, build in batch:  # decode now, one batch's images at a time
                try:
                    built.append((job, index, build()))
                except Exception as exc:
                    failed.append((job, index, [], None, _reason(exc)))
            outcomes = failed + (self._run_isolated(built) if built else [])
            with self._cond:
                for job, index, candidates, version, error in outcomes:
                    if job in self._jobs:
                        self._settle(job, index, candidates, version, error)
                self._dispatch()
                self._cond.notify_all()

    def _run_isolated(self, entries: list[tuple[Job, int, Query]]) -> list[tuple]:
        """Run a batch; when the model fails, retry it in halves so only a task that fails alone fails."""
        try:
            candidates, version = self.run_batch([query for _, _, query in entries])
            if len(candidates) != len(entries):
                raise RuntimeError(f"the model returned {len(candidates)} results for {len(entries)} tasks")
            return [(job, index, cands, version, None) for (job, index, _), cands in zip(entries, candidates)]
        except Exception as exc:
            if len(entries) == 1:
                log.warning("the model failed on one task: %s", _reason(exc), exc_info=True)
                return [(entries[0][0], entries[0][1], [], None, f"the model failed on this task: {_reason(exc)}")]
            log.warning("a model batch of %d tasks failed (%s); retrying it in halves", len(entries), _reason(exc))
            middle = len(entries) // 2
            return self._run_isolated(entries[:middle]) + self._run_isolated(entries[middle:])


def _host_of(item: Any) -> Hashable:
    """Where a pending task's image comes from (illume.images.ImageSource.host_key; None: no I/O wait)."""
    return getattr(getattr(item, "image", None), "host_key", None)


def _as_is(query: Query) -> Query:
    return query


def _reason(exc: BaseException) -> str:
    if isinstance(exc, IllumeError):
        return exc.what
    return f"{type(exc).__name__}: {str(exc)[:300]}"
