"""Collect the tasks of concurrent /predict requests into shared model batches.

Requests put their queries in one FIFO; a single worker thread takes up to `batch_size`
queries at a time (from however many requests are waiting) and runs them as one batch.
Admission is bounded by the number of requests waiting or running: past `queue_size` a
request is refused at once (the route answers 503 + Retry-After) instead of queueing
without limit.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence

from illume.records import Candidate
from illume.vlm import Query

log = logging.getLogger(__name__)

# run_batch(queries) -> (candidates per query, version of the model that produced them)
RunBatch = Callable[[Sequence[Query]], "tuple[list[list[Candidate]], str]"]


class QueueFull(Exception):
    """Too many requests are waiting; the caller should retry later."""


@dataclass
class BatchResult:
    candidates: list[list[Candidate]]
    versions: list[str]


@dataclass
class _Job:
    queries: Sequence[Query]
    future: Future = field(default_factory=Future)
    candidates: list = field(default_factory=list)
    versions: list = field(default_factory=list)
    remaining: int = 0

    def __post_init__(self) -> None:
        self.candidates = [None] * len(self.queries)
        self.versions = [None] * len(self.queries)
        self.remaining = len(self.queries)


class Batcher:
    def __init__(self, run_batch: RunBatch, batch_size: int = 8, queue_size: int = 32) -> None:
        if batch_size < 1 or queue_size < 1:
            raise ValueError("batch_size and queue_size must be at least 1")
        self.run_batch = run_batch
        self.batch_size = batch_size
        self.queue_size = queue_size
        self._pending: deque[tuple[_Job, int]] = deque()
        self._jobs = 0
        self._cond = threading.Condition()
        self._stopped = False
        self.batches_run = 0
        self._worker = threading.Thread(target=self._loop, name="illume-batcher", daemon=True)
        self._worker.start()

    @property
    def jobs_in_flight(self) -> int:
        with self._cond:
            return self._jobs

    def submit(self, queries: Sequence[Query]) -> "Future[BatchResult]":
        job = _Job(list(queries))
        if not queries:
            job.future.set_result(BatchResult([], []))
            return job.future
        with self._cond:
            if self._stopped:
                raise RuntimeError("the batcher is stopped")
            if self._jobs >= self.queue_size:
                raise QueueFull(f"{self._jobs} requests are already waiting or running (limit {self.queue_size})")
            self._jobs += 1
            self._pending.extend((job, index) for index in range(len(queries)))
            self._cond.notify()
        return job.future

    def stop(self) -> None:
        """Finish the running batch, fail the requests still waiting."""
        with self._cond:
            self._stopped = True
            waiting = {id(job): job for job, _ in self._pending}
            self._pending.clear()
            self._cond.notify_all()
        self._worker.join(timeout=30)
        for job in waiting.values():
            if not job.future.done():
                job.future.set_exception(RuntimeError("the backend is shutting down"))

    def _take(self) -> list[tuple[_Job, int]] | None:
        with self._cond:
            while not self._pending and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            return [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            try:
                candidates, version = self.run_batch([job.queries[index] for job, index in batch])
                error = None
            except Exception as exc:  # the model failed: fail the requests, keep serving
                log.exception("model batch of %d queries failed", len(batch))
                error = exc
            self.batches_run += 1
            for position, (job, index) in enumerate(batch):
                if job.future.done():
                    continue
                if error is not None:
                    self._finish(job, error)
                    continue
                job.candidates[index], job.versions[index] = candidates[position], version
                job.remaining -= 1
                if job.remaining == 0:
                    self._finish(job, None)

    def _finish(self, job: _Job, error: Exception | None) -> None:
        with self._cond:
            self._jobs -= 1
            if error is not None:  # drop the failed job's other queued queries
                self._pending = deque(entry for entry in self._pending if entry[0] is not job)
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(BatchResult(job.candidates, job.versions))
