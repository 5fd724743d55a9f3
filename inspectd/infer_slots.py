"""Which OpenVINO infer request an inference runs on: all cores on one image when it is alone, one
stream per image when several wait.

An image scored alone runs on the compilation made for the lowest latency (one stream that uses
every core), so an idle daemon answers as fast as the CPU allows. When several images wait (a
backlog), they run side by side on the streams of a second compilation made with OpenVINO's
THROUGHPUT hint, one infer request each: more images per second from the same cores (1.13x in a
daemon draining a backlog on a 2-core CPU). The two compilations never run at the same time: a
switch waits until the other's inferences have finished. (An earlier version let them overlap, and
a clean-clone CI run hung the daemon twice exactly then: 7df9945.)

anomalib's ``OpenVINOInferencer.predict`` calls its compiled model as ``self.model(inputs)``;
``InferSlots`` stands in for it there, so anomalib's pre- and post-processing stay untouched. The
request a call runs on is the one ``slot()`` gave the calling thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

Mode = Literal["latency", "throughput"]
WAKE_S = 1.0  # a waiting thread re-checks at least this often (every finish also wakes it)


class InferSlots:
    """Hands each inference an infer request; at most one latency or ``streams`` throughput
    inferences at once, never both kinds together."""

    def __init__(self, latency: Any, throughput: Any | None = None) -> None:
        """``latency`` and ``throughput``: OpenVINO compiled models of the same IR; without
        ``throughput``, or with one that has a single stream, every inference runs alone."""
        self._latency = latency.create_infer_request()
        self._free: list[Any] = []
        if throughput is not None:
            streams = int(throughput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            if streams > 1:
                self._free = [throughput.create_infer_request() for _ in range(streams)]
        self.streams = max(1, len(self._free))
        self._cond = threading.Condition()
        self._asking = 0  # inferences asked for and not finished: waiting or running
        self._running = 0
        self._mode: Mode | None = None  # of the running inferences
        self._local = threading.local()
        self.counts: dict[Mode, int] = {"latency": 0, "throughput": 0}

    @contextmanager
    def slot(self) -> Iterator[Mode]:
        """Wait for a request and hold it for the calling thread until the block ends."""
        with self._cond:
            self._asking += 1
            try:
                mode, request = self._take()
            except BaseException:
                self._asking -= 1
                raise
        self._local.request = request
        try:
            yield mode
        finally:
            self._local.request = None
            with self._cond:
                self._asking -= 1
                self._running -= 1
                if mode == "throughput":
                    self._free.append(request)
                if self._running == 0:
                    self._mode = None
                self._cond.notify_all()

    def _take(self) -> tuple[Mode, Any]:
        while True:
            if self._running == 0:
                mode: Mode = "throughput" if self._free and self._asking > 1 else "latency"
            elif self._mode == "throughput" and self._free:
                mode = "throughput"
            else:
                self._cond.wait(WAKE_S)
                continue
            self._running += 1
            self._mode = mode
            self.counts[mode] += 1
            return mode, self._free.pop() if mode == "throughput" else self._latency

    def __call__(self, inputs: dict[str, Any]) -> Any:
        """What anomalib calls as its compiled model: infer on the request ``slot()`` gave this
        thread, or on one taken for this call alone."""
        request = getattr(self._local, "request", None)
        if request is None:
            with self.slot():
                return self(inputs)
        return request.infer(inputs, share_inputs=True)  # as CompiledModel.__call__ does
