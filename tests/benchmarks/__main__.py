"""``python -m tests.benchmarks [TOPIC...]``: run every ``bench_*.py`` module (or those named)
and print one table of their results.

A benchmark module provides ``run() -> list[Result]`` and, optionally, ``notes() -> list[str]``
(how it measured: sizes, settings); both are called without arguments.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import tests.benchmarks
from tests.benchmarks.report import Result, table


def topics() -> list[str]:
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(tests.benchmarks.__path__)
        if m.name.startswith("bench_")
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks")
    parser.add_argument("topics", nargs="*", help=f"which to run (default all): {topics()}")
    args = parser.parse_args(argv)
    chosen = args.topics or topics()
    unknown = sorted(set(chosen) - set(topics()))
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}; there are {', '.join(topics())}")
    results: list[Result] = []
    notes: list[str] = []
    for topic in chosen:
        module = importlib.import_module(f"tests.benchmarks.bench_{topic}")
        print(f"running {topic} ...", file=sys.stderr, flush=True)
        results.extend(module.run())
        if hasattr(module, "notes"):
            notes.extend(module.notes())
    print(table(results, notes=notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
