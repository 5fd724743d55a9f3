"""Which OpenVINO infer request an inference runs on: all cores on one image when it is alone, one
stream per image when several wait, and several images in one request when more wait than there
are streams.

An image scored alone runs on the compilation made for the lowest latency (one stream that uses
every core), so an idle daemon answers as fast as the CPU allows. When several images wait (a
backlog), they run side by side on the streams of a second compilation made with OpenVINO's
THROUGHPUT hint: more images per second from the same cores (1.13x in a daemon draining a backlog
on a 2-core CPU). When more images wait than there are free streams, the next free request takes up
to ``max_batch`` of them at once (the IR's batch dimension is dynamic), as the fastest raw
configuration of ``inspectd bench`` does; an image never waits for a partner, so batches form only
in a backlog. The two compilations never run at the same time: a switch waits until the other's
inferences have finished. (An earlier version let them overlap, and a clean-clone CI run hung the
daemon twice exactly then: 7df9945.)

anomalib's ``OpenVINOInferencer.predict`` calls its compiled model as ``self.model(inputs)`` and
reads the answer with ``names()`` and ``to_tuple()``; ``InferSlots`` stands in for it there, so
anomalib's pre- and post-processing stay untouched. The request a call runs on follows the mode
``slot()`` gave the calling thread.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Mode = Literal["latency", "throughput"]
WAKE_S = 1.0  # a waiting thread re-checks at least this often (every finish also wakes it)


@dataclass(eq=False)  # compared by identity: the deque's remove() must not compare arrays
class _Waiting:
    """One image's inputs waiting for a throughput request, and its answer once run."""

    inputs: dict[str, Any]
    done: bool = False
    answer: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Outputs:
    """One image's share of a batched answer, read the way anomalib reads OpenVINO's ``OVDict``."""

    _names: list[set[str]]
    _values: tuple[Any, ...]

    def names(self) -> list[set[str]]:
        return self._names

    def to_tuple(self) -> tuple[Any, ...]:
        return self._values


def stack_inputs(group: list[dict[str, Any]]) -> dict[str, Any]:
    """Several images' inputs as one batch (each input's first axis is the batch)."""
    if len(group) == 1:
        return group[0]
    return {name: np.concatenate([inputs[name] for inputs in group]) for name in group[0]}


def split_outputs(answer: Any, sizes: list[int]) -> list[Any]:
    """A batched answer cut back into one answer per caller, ``sizes[i]`` images each."""
    if len(sizes) == 1:
        return [answer]
    names, values = answer.names(), answer.to_tuple()
    starts = np.cumsum([0, *sizes])
    return [Outputs(names, tuple(v[a:b] for v in values)) for a, b in itertools.pairwise(starts)]


def _images(inputs: dict[str, Any]) -> int:
    return len(next(iter(inputs.values())))


def _shapes(inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Each input's shape but the batch axis: only inputs alike in these can be stacked."""
    return {name: tuple(np.shape(value)[1:]) for name, value in inputs.items()}


class InferSlots:
    """Hands each inference an infer request; at most one latency inference, or ``streams``
    throughput requests of up to ``max_batch`` images each, at once, never both kinds together."""

    def __init__(self, latency: Any, throughput: Any | None = None, max_batch: int = 1) -> None:
        """``latency`` and ``throughput``: OpenVINO compiled models of the same IR; without
        ``throughput``, or with one that has a single stream, every inference runs alone."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._latency = latency.create_infer_request()
        self._free: list[Any] = []
        if throughput is not None:
            streams = int(throughput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            if streams > 1:
                self._free = [throughput.create_infer_request() for _ in range(streams)]
        self.streams = max(1, len(self._free))
        self.max_batch = max_batch if self._free else 1
        self._cond = threading.Condition()
        self._asking = 0  # inferences asked for and not finished: waiting or running
        self._running = 0
        self._mode: Mode | None = None  # of the running inferences
        self._waiting: collections.deque[_Waiting] = collections.deque()  # for a throughput request
        self._local = threading.local()
        self.counts: dict[str, int] = {"latency": 0, "throughput": 0, "batched": 0}

    @contextmanager
    def slot(self) -> Iterator[Mode]:
        """Wait for this thread's turn and the kind of request its inference runs on."""
        with self._cond:
            self._asking += 1
            try:
                mode = self._take()
            except BaseException:
                self._asking -= 1
                raise
        self._local.mode = mode
        try:
            yield mode
        finally:
            self._local.mode = None
            with self._cond:
                self._asking -= 1
                self._running -= 1
                if self._running == 0:
                    self._mode = None
                self._cond.notify_all()

    def _take(self) -> Mode:
        while True:
            if self._running == 0:
                mode: Mode = "throughput" if self._free and self._asking > 1 else "latency"
            elif self._mode == "throughput":
                mode = "throughput"  # it waits for a free stream (or a partner's batch) when called
            else:
                self._cond.wait(WAKE_S)
                continue
            self._running += 1
            self._mode = mode
            self.counts[mode] += 1
            return mode

    def __call__(self, inputs: dict[str, Any]) -> Any:
        """What anomalib calls as its compiled model: infer in the mode ``slot()`` gave this
        thread, or in one taken for this call alone."""
        mode = getattr(self._local, "mode", None)
        if mode is None:
            with self.slot():
                return self(inputs)
        if mode == "latency":
            return self._latency.infer(inputs, share_inputs=True)  # as CompiledModel.__call__ does
        return self._throughput(inputs)

    def _take_group(self) -> list[_Waiting]:
        """The head of the queue and, up to ``max_batch`` in all, the next queued images of the
        same shape (a frame smaller than the model's input keeps its own size: it runs apart)."""
        head = self._waiting.popleft()
        group = [head]
        for waiting in list(self._waiting):
            if len(group) == self.max_batch:
                break
            if _shapes(waiting.inputs) == _shapes(head.inputs):
                self._waiting.remove(waiting)
                group.append(waiting)
        return group

    def _throughput(self, inputs: dict[str, Any]) -> Any:
        """Queue ``inputs``; the first in the queue takes the next free request and the images
        queued behind it (up to ``max_batch``), runs them and hands each its answer."""
        me = _Waiting(inputs)
        with self._cond:
            self._waiting.append(me)
            while not me.done:
                if self._free and self._waiting and self._waiting[0] is me:
                    group = self._take_group()
                    request = self._free.pop()
                    break
                self._cond.wait(WAKE_S)
            else:
                if me.error is not None:
                    raise me.error
                return me.answer
        try:
            answer = request.infer(stack_inputs([w.inputs for w in group]), share_inputs=True)
            answers = split_outputs(answer, [_images(w.inputs) for w in group])
        except BaseException as exc:
            with self._cond:
                for waiting in group[1:]:
                    waiting.done, waiting.error = True, exc
                self._free.append(request)
                self._cond.notify_all()
            raise
        with self._cond:
            for waiting, mine in zip(group[1:], answers[1:], strict=True):
                waiting.done, waiting.answer = True, mine
            if len(group) > 1:
                self.counts["batched"] += len(group)
            self._free.append(request)
            self._cond.notify_all()
        return answers[0]
