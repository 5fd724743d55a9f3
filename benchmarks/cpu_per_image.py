"""Where the daemon's CPU goes: core-milliseconds per image of raw OpenVINO and of a real
``inspectd run`` draining a backlog, the daemon's split by thread.

    python benchmarks/cpu_per_image.py --model DIR [--images 480] [--rounds 2]

On a CPU that inference keeps busy, everything the daemon does besides inference takes cores from
it, so ``daemon_ips / raw_ips`` is about ``raw CPU / daemon CPU`` per image. Each round times raw
OpenVINO (THROUGHPUT hint, an ``AsyncInferQueue``, frames decoded beforehand, in this process) and
then the daemon draining the same frames as a backlog (``model.backlog_streams``, the same
precision), and reads the CPU time of both processes from /proc. The daemon's share is split into
its main thread (claims, rows, moves), the threads alive at the end (OpenVINO's stream threads and
watchdog's) and the threads that ended: one per judged image, which hashes, decodes and hands it
to OpenVINO. The frames are ``inspectd bench``'s, 256x256 PNGs unless ``--size`` and ``--format``
say otherwise (``--size 1280x1024 --format jpg``: camera frames, which the daemon decodes at the
model's input size and raw OpenVINO gets decoded beforehand, so their decoding is in the daemon's
share alone).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from soak import cpu_seconds, judged_at_least  # this folder: run as a script

from daemon.bench import daemon_child, daemon_config, decided_count, frame_size, wait_for, write_images
from daemon.bench.drain import decided, drain_rate, wait_settled
from daemon.bench.raw import input_tensors
from inspectd.export import locate_xml
from inspectd.scorer import cpu_precisions


def threads(pid: int) -> dict[int, float]:
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[int(task.name)] = cpu_seconds(pid, int(task.name))
        except OSError:  # ended meanwhile
            continue
    return found


def raw_round(xml: Path, tensors: Any, precision: str) -> tuple[float, float]:
    """(images/s, core-ms per image) of raw OpenVINO on the pre-decoded frames."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(xml), "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "THROUGHPUT"}
    )
    queue = ov.AsyncInferQueue(
        compiled, max(2, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    )
    for tensor in tensors[:4]:
        queue.start_async({0: tensor[None]})
    queue.wait_all()
    cpu, wall = cpu_seconds(os.getpid()), time.perf_counter()
    for tensor in tensors:
        queue.start_async({0: tensor[None]})
    queue.wait_all()
    wall, cpu = time.perf_counter() - wall, cpu_seconds(os.getpid()) - cpu
    return len(tensors) / wall, 1000 * cpu / len(tensors)


def daemon_round(
    proc: subprocess.Popen[bytes], frames: list[Path], stage: Path, inbox: Path, db: Path
) -> tuple[float, dict[str, float]]:
    """(images/s from the first decision to the last, core-ms per image by part of the daemon)."""
    stage.mkdir()
    staged = [Path(shutil.copy(frame, stage / f"{stage.name}-{frame.name}")) for frame in frames]
    before = decided_count(db)
    alive, total = threads(proc.pid), cpu_seconds(proc.pid)
    for path in staged:
        path.rename(inbox / path.name)
    wait_for(functools.partial(judged_at_least, db, before + len(frames)), 600, proc)
    total = cpu_seconds(proc.pid) - total
    after = threads(proc.pid)
    main = after.get(proc.pid, 0.0) - alive.get(proc.pid, 0.0)
    survivors = sum(cpu - alive.get(tid, 0.0) for tid, cpu in after.items() if tid != proc.pid)
    ended = total - main - survivors  # includes threads that started and ended within the drain
    per = {
        "total": total,
        "main thread": main,
        "threads alive at the end": survivors,
        "threads that ended": ended,
    }
    times = sorted(t for _, t in decided(db)[before:])
    return drain_rate(times, 1) or float("nan"), {k: 1000 * v / len(frames) for k, v in per.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="export folder (or model.xml)")
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", choices=("f32", "bf16"), help="default: bf16 where the CPU has it")
    parser.add_argument("--size", default="256x256", metavar="WxH", help="frame size (default 256x256)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="frame file format")
    args = parser.parse_args()
    try:
        width, height = frame_size(args.size)
    except ValueError as exc:
        parser.error(str(exc))
    precision = args.precision or cpu_precisions()[-1]
    xml = locate_xml(args.model)
    with tempfile.TemporaryDirectory(prefix="inspectd-cpu-") as tmp:
        work = Path(tmp)
        frames = write_images(work / "frames", args.images, (width, height), args.format)
        tensors = input_tensors(xml, frames)
        config = daemon_config(work, args.model.resolve())
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        data["model"]["precision"] = precision
        config.write_text(yaml.safe_dump(data), encoding="utf-8")
        inbox, db = work / "inbox", work / "bench.db"
        inbox.mkdir()
        shutil.copy(frames[0], inbox / f"warmup.{args.format}")
        print(f"{args.images} {args.format.upper()} frames {width}x{height} per round, {precision}")
        with daemon_child(config, work) as proc:
            wait_for(functools.partial(judged_at_least, db, 1), 180, proc)
            for round_no in range(args.rounds):
                raw_ips, raw_ms = raw_round(xml, tensors, precision)
                ips, parts = daemon_round(proc, frames, work / f"r{round_no}", inbox, db)
                wait_settled(db, work / "heatmaps")
                print(
                    f"round {round_no + 1}: raw {raw_ips:.1f} images/s, {raw_ms:.1f} core-ms/image; "
                    f"daemon {ips:.1f} images/s ({ips / raw_ips:.3f} x raw), "
                    f"{parts['total']:.1f} core-ms/image ({parts['total'] - raw_ms:+.1f})"
                )
                for name, ms in parts.items():
                    if name != "total":
                        print(f"    {name:26s} {ms:6.2f} core-ms/image")


if __name__ == "__main__":
    main()
