"""What a benchmark returns (``Result`` rows) and how the runner prints them as one table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Result:
    what: str
    unit: str
    ours: float
    baseline: float
    # How the baseline was obtained, in a few words (printed as a footnote).
    baseline_is: str

    @property
    def speedup(self) -> float:
        return self.ours / self.baseline if self.baseline else float("inf")


def table(results: Sequence[Result], *, notes: Sequence[str] = ()) -> str:
    rows = [("what", "ours", "baseline", "x")]
    for r in results:
        rows.append(
            (f"{r.what} ({r.unit})", f"{r.ours:,.0f}", f"{r.baseline:,.0f}", f"{r.speedup:,.1f}")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    footnotes = [f"baseline of '{r.what}': {r.baseline_is}" for r in results]
    return "\n".join([*lines, "", *footnotes, *notes])


def machine_load() -> str:
    """The machine's load averages now: every benchmark notes them beside its figures, as the
    machine is shared and its load moves the figures."""
    one, five, fifteen = os.getloadavg()
    return (
        f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min,"
        f" {os.cpu_count()} CPUs)"
    )
