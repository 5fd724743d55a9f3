"""Which infer request an inference runs on: every core for an image alone, one stream each for
images that wait together, several images per stream when more wait than there are streams, and
never the two compilations at once."""

from __future__ import annotations

import functools
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inspectd.infer_slots import InferSlots, Outputs
from inspectd.scorer import Model
from tests.conftest import write_image


class Recorder:
    """Counts the inferences running per kind, and the most seen at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = {"latency": 0, "throughput": 0}
        self.most = {"latency": 0, "throughput": 0}
        self.mixed = False  # both kinds ran at the same instant
        self.batches: list[int] = []  # images per inference, in order

    def enter(self, kind: str) -> None:
        with self.lock:
            self.running[kind] += 1
            self.most[kind] = max(self.most[kind], self.running[kind])
            self.mixed = self.mixed or all(self.running.values())

    def leave(self, kind: str) -> None:
        with self.lock:
            self.running[kind] -= 1


class FakeRequest:
    def __init__(self, kind: str, recorder: Recorder, seconds: float) -> None:
        self.kind, self.recorder, self.seconds = kind, recorder, seconds
        self.busy = threading.Lock()

    def infer(self, inputs: dict[str, Any], share_inputs: bool = False) -> Outputs:
        """Answers like OpenVINO's OVDict: per output its names, and a value per image."""
        assert self.busy.acquire(blocking=False), "one request used by two threads at once"
        self.recorder.enter(self.kind)
        try:
            time.sleep(self.seconds)
            images = len(inputs["x"])
            with self.recorder.lock:
                self.recorder.batches.append(images)
            return Outputs([{"kind"}, {"x"}], (np.array([self.kind] * images), inputs["x"] * 10))
        finally:
            self.recorder.leave(self.kind)
            self.busy.release()


class FakeCompiled:
    def __init__(self, kind: str, recorder: Recorder, streams: int = 1, seconds: float = 0.02) -> None:
        self.kind, self.recorder, self.streams, self.seconds = kind, recorder, streams, seconds

    def create_infer_request(self) -> FakeRequest:
        return FakeRequest(self.kind, self.recorder, self.seconds)

    def get_property(self, name: str) -> int:
        assert name == "OPTIMAL_NUMBER_OF_INFER_REQUESTS"
        return self.streams


def ask(slots: InferSlots, x: int, shape: tuple[int, ...] = (1, 1)) -> tuple[str, int]:
    """One image's inference (its input is x, its answer 10x) as anomalib asks for it."""
    answer = slots({"x": np.full(shape, x)})
    (kind,), (value,) = answer.to_tuple()  # exactly one image's answer comes back
    assert [next(iter(n)) for n in answer.names()] == ["kind", "x"]
    return str(kind), int(value.flat[0]) // 10


def run(slots: InferSlots, x: int, shape: tuple[int, ...] = (1, 1)) -> tuple[str, int]:
    with slots.slot():
        return ask(slots, x, shape)


def test_an_image_alone_runs_on_the_latency_compilation() -> None:
    recorder = Recorder()
    slots = InferSlots(FakeCompiled("latency", recorder), FakeCompiled("throughput", recorder, streams=2))
    assert [run(slots, i) for i in range(3)] == [("latency", 0), ("latency", 1), ("latency", 2)]
    assert slots.streams == 2


def test_images_waiting_together_share_the_streams_and_never_overlap_the_latency_request() -> None:
    recorder = Recorder()
    slots = InferSlots(FakeCompiled("latency", recorder), FakeCompiled("throughput", recorder, streams=2))
    rng = random.Random(0)

    def jittered(x: int) -> tuple[str, Any]:
        time.sleep(rng.random() * 0.03)  # arrivals alone and in bursts
        return run(slots, x)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(jittered, range(120)))
    assert [x for _, x in results] == list(range(120))  # each call got its own answer back
    assert recorder.most == {"latency": 1, "throughput": 2}
    assert not recorder.mixed, "the two compilations ran at the same time"
    assert slots.counts["throughput"] > 0 and slots.counts["latency"] > 0


def test_without_a_throughput_compilation_everything_runs_one_at_a_time() -> None:
    recorder = Recorder()
    for throughput in (None, FakeCompiled("throughput", recorder, streams=1)):
        slots = InferSlots(FakeCompiled("latency", recorder), throughput)
        with ThreadPoolExecutor(3) as pool:
            kinds = {kind for kind, _ in pool.map(functools.partial(run, slots), range(12))}
        assert kinds == {"latency"} and slots.streams == 1
    assert recorder.most["latency"] == 1


def test_a_call_outside_a_slot_takes_one_for_itself() -> None:
    recorder = Recorder()
    slots = InferSlots(FakeCompiled("latency", recorder), FakeCompiled("throughput", recorder, streams=2))
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(functools.partial(ask, slots), range(30)))
    assert [x for _, x in answers] == list(range(30))
    assert not recorder.mixed and recorder.most["throughput"] <= 2


def backlogged() -> tuple[Recorder, InferSlots, list[Any]]:
    """Two streams, batches of two, and both streams taken as if two throughput inferences were
    running: the calls that come next queue up. Returns the taken requests too."""
    recorder = Recorder()
    slots = InferSlots(
        FakeCompiled("latency", recorder), FakeCompiled("throughput", recorder, streams=2), max_batch=2
    )
    with slots._cond:
        slots._running, slots._mode = 1, "throughput"
        return recorder, slots, [slots._free.pop(), slots._free.pop()]


def wait_queued(slots: InferSlots, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(slots._waiting) < count:
        assert time.monotonic() < deadline, "the calls did not queue up"
        time.sleep(0.005)


def release(slots: InferSlots, requests: list[Any]) -> None:
    with slots._cond:
        slots._running -= 1
        slots._free.extend(requests)
        slots._cond.notify_all()


def test_images_queued_behind_busy_streams_share_a_request_and_each_gets_its_own_answer() -> None:
    recorder, slots, busy = backlogged()
    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(run, slots, x) for x in range(5)]
        wait_queued(slots, 5)
        release(slots, busy)
        answers = [f.result(timeout=10) for f in futures]
    assert answers == [("throughput", x) for x in range(5)]  # each its own answer
    assert sorted(recorder.batches) == [1, 2, 2] and recorder.most["throughput"] <= 2
    assert slots.counts["batched"] >= 4


def test_only_images_of_the_same_shape_share_a_request() -> None:
    """A frame smaller than the model's input keeps its size, so it cannot be stacked with others:
    it runs apart, and the images queued behind it still pair up."""
    recorder, slots, busy = backlogged()
    shapes = {1: (1, 1), 2: (1, 2), 3: (1, 1), 4: (1, 2)}
    with ThreadPoolExecutor(4) as pool:
        futures = []
        for x, shape in shapes.items():  # queued in this order
            futures.append(pool.submit(run, slots, x, shape))
            wait_queued(slots, len(futures))
        release(slots, busy[:1])  # one stream: the batches run one after another
        answers = [f.result(timeout=10) for f in futures]
    assert answers == [("throughput", x) for x in shapes]
    assert recorder.batches == [2, 2]  # (1, 3), then (2, 4)


def test_a_failed_batch_fails_every_image_in_it_and_frees_its_request() -> None:
    recorder, slots, busy = backlogged()
    with ThreadPoolExecutor(4) as pool:
        futures = []
        for x in (1, 2, -1, 3):  # queued in this order
            futures.append(pool.submit(run, slots, x))
            wait_queued(slots, len(futures))
        release(slots, [Failing(request, bad=-1) for request in busy])  # (1, 2) works, (-1, 3) fails
        outcomes = [f.exception(timeout=10) or f.result() for f in futures]
    assert outcomes[0] == ("throughput", 1) and outcomes[1] == ("throughput", 2)
    assert all(isinstance(o, RuntimeError) for o in outcomes[2:])
    assert len(slots._free) == 2 and not slots._waiting
    assert sorted(recorder.batches) == [2]  # the failed batch never reached the request
    assert run(slots, 7)[1] == 7  # nothing left hanging


class Failing:
    """A request that fails any batch holding ``bad``."""

    def __init__(self, request: FakeRequest, bad: int) -> None:
        self.request, self.bad = request, bad

    def infer(self, inputs: dict[str, Any], share_inputs: bool = False) -> Outputs:
        if self.bad in inputs["x"]:
            raise RuntimeError("inference failed")
        return self.request.infer(inputs, share_inputs)


def test_a_real_model_scores_a_backlog_on_its_streams_like_one_at_a_time(
    tiny_model: Path, tmp_path: Path
) -> None:
    """The daemon's model (two compilations) under a jittered load from five threads: no hang,
    both kinds of request used, images batched on a stream, and each image scores as it does
    alone."""
    model = Model(tiny_model, cache_dir=tmp_path / "cache", backlog_streams=True, backlog_batch=2)
    images = [write_image(tmp_path / f"{i}.png", seed=i, size=96) for i in range(8)]
    alone = {p: model.score(p).score for p in images}
    rng = random.Random(1)

    def jittered(path: Path) -> tuple[Path, float]:
        time.sleep(rng.random() * 0.01)
        return path, model.score(path).score

    started = time.monotonic()
    with ThreadPoolExecutor(5) as pool:
        together = list(pool.map(jittered, images * 8))
    assert time.monotonic() - started < 120
    counts = model._slots.counts  # which requests the load used
    if model.streams > 1:
        assert counts["throughput"] > 0 and counts["batched"] > 0
    for path, score in together:
        assert score == pytest.approx(alone[path], abs=2e-3)  # bf16 kernels may differ per stream layout
