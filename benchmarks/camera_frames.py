"""``inspectd bench`` on two image kinds in one run: small PNGs at the model's input size and
camera-like 1280x1024 JPEG frames, so that decoding and resizing a real frame is part of what the
daemon is compared against.

    python benchmarks/camera_frames.py --model DIR [--baseline FP_DIR] [--images 30] [--rounds 3] [--json]

Prints, per kind, the ratios the speed issue sets goals for (daemon / raw, daemon / seed loop,
overhead per image, idle latency over inference; with ``--baseline``, the daemon against the seed
loop of that other export, e.g. an INT8 model against the fp32 one it came from). Each kind is
measured against its own baseline from the same run, since absolute speeds differ threefold between
the CPUs this runs on.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import asdict
from pathlib import Path

from daemon.bench import DEFAULT_ROUNDS, bench

KINDS = {"png-input-size": ((256, 256), "png"), "jpg-1280x1024": ((1280, 1024), "jpg")}


def _say(kind: str, text: str) -> None:
    print(f"{kind}: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="an export folder (inspectd train --output)"
    )
    parser.add_argument(
        "--baseline", type=Path, help="the fp32 export an INT8 --model came from (its seed loop is timed too)"
    )
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help=f"backlog drains per kind, as inspectd bench --rounds (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args(argv)
    found = {}
    for kind, (size, fmt) in KINDS.items():
        result = bench(
            args.model,
            images=args.images,
            size=size,
            fmt=fmt,
            say=functools.partial(_say, kind),
            baseline=args.baseline,
            rounds=args.rounds,
        )
        found[kind] = {"ratios": result.ratios(), "figures": asdict(result)}
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for kind, entry in found.items():
        r, f = entry["ratios"], entry["figures"]
        print(
            f"{kind}: daemon {f['daemon_ips']:.2f} images/s = {r['daemon_over_raw']:.2f} x raw "
            f"({f['raw_ips']:.2f}), {r['daemon_over_seed_loop']:.2f} x seed loop "
            f"({f['seed_loop_ips']:.2f}); overhead {r['overhead_ms_per_image']:.0f} ms/image; idle "
            f"latency p50 {f['latency_p50_ms']:.0f} ms = raw inference "
            f"{r['idle_latency_over_raw_inference_ms']:+.0f} ms, daemon inference "
            f"{r['idle_latency_over_daemon_inference_ms']:+.0f} ms"
            + (
                f"; {r['daemon_over_baseline_seed_loop']:.2f} x the baseline's seed loop"
                if "daemon_over_baseline_seed_loop" in r
                else ""
            )
            + (
                f"; {f['overlays_per_drain']:.0f} overlays per drain, the last "
                f"{f['overlays_done_ms']:.0f} ms after the last verdict"
                if f["overlays_done_ms"] is not None
                else ""
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
