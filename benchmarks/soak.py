"""Soak: many images through a real ``inspectd run``; prints RSS growth after warm-up and the
daemon's CPU use while its inbox is empty.

    python benchmarks/soak.py --model DIR [--images 10000] [--chunk 50] [--idle-seconds 60] [--json]

Images are fed in chunks (each chunk waits until the daemon has judged the one before, so the disk
holds one chunk at a time; judged files are deleted as they land). RSS is read from
/proc/PID/status after ``--warmup`` images and at the end; growth is (end - warm) / warm. Idle CPU is
the daemon's user+system time over ``--idle-seconds`` with an empty inbox, as a share of one core.
The issue's goals: growth <= 5 %, idle CPU <= 1 %.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from daemon.bench import daemon_child, daemon_config, decided_count, wait_for, write_images


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """utime + stime of a process, or of one of its threads."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def judged_at_least(db: Path, count: int) -> bool:
    return decided_count(db) >= count


def soak(model: Path, images: int, chunk: int, warmup: int, idle_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="inspectd-soak-") as tmp:
        work = Path(tmp)
        frames = write_images(work / "frames", chunk, (256, 256), "png")
        config = daemon_config(work, model)
        inbox, db = work / "inbox", work / "bench.db"
        inbox.mkdir()
        with daemon_child(config, work) as proc:
            warm_rss = end_rss = float("nan")
            fed = 0
            started = time.monotonic()
            while fed < images:
                n = min(chunk, images - fed)
                for i, frame in enumerate(frames[:n]):
                    staged = inbox / f".{fed + i}.part"
                    shutil.copy(frame, staged)
                    staged.rename(inbox / f"soak{fed + i:06d}.png")
                fed += n
                wait_for(functools.partial(judged_at_least, db, fed), 60 + 10 * n, proc)
                for folder in ("accepted", "rejected", "heatmaps"):
                    # not the overlay being written (a hidden temporary name, renamed meanwhile)
                    for path in (work / folder).glob("[!.]*"):
                        path.unlink(missing_ok=True)
                if fed >= warmup and math.isnan(warm_rss):  # the first chunk past warm-up
                    warm_rss = rss_mb(proc.pid)
                print(f"soak: {fed}/{images} judged, RSS {rss_mb(proc.pid):.0f} MB", file=sys.stderr)
            end_rss = rss_mb(proc.pid)
            seconds = time.monotonic() - started
            time.sleep(5)  # let the last commits and the heatmap thread go quiet
            before = cpu_seconds(proc.pid)
            time.sleep(idle_s)
            idle_share = (cpu_seconds(proc.pid) - before) / idle_s
    return {
        "images": images,
        "images_per_s": round(images / seconds, 3),
        "rss_after_warmup_mb": round(warm_rss, 1),
        "rss_end_mb": round(end_rss, 1),
        "rss_growth": round((end_rss - warm_rss) / warm_rss, 4),
        "idle_cpu_share_of_one_core": round(idle_share, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="export folder")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = soak(args.model, args.images, args.chunk, args.warmup, args.idle_seconds)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"{figures['images']} images at {figures['images_per_s']} images/s; RSS "
            f"{figures['rss_after_warmup_mb']} MB after warm-up -> {figures['rss_end_mb']} MB "
            f"({100 * figures['rss_growth']:+.1f} %, goal <= +5 %); idle CPU "
            f"{100 * figures['idle_cpu_share_of_one_core']:.2f} % of one core (goal <= 1 %)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
