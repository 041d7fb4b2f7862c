"""Rows of the results table and the markdown report (`bench/results/latest.md`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

MET, MISSED, INFO = "yes", "**no**", ""


@dataclass
class Row:
    """One line of the table. `met` is None for a figure that has no target of its own."""

    id: str
    what: str
    measured: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: bool | None = None

    def cells(self) -> list[str]:
        verdict = INFO if self.met is None else (MET if self.met else MISSED)
        return [self.id, self.what, self.measured, self.baseline, self.ratio, self.target, verdict]


@dataclass
class Section:
    """What one benchmark module produced: its rows and the notes that say how it measured."""

    id: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


HEADER = ["id", "what", "measured", "baseline (same run)", "ratio", "target", "met"]


def table(rows: list[Row]) -> str:
    """A markdown table of `rows` (also readable as plain text)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def ms(value: float) -> str:
    """Milliseconds with a precision that suits the size."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def per_second(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}/s" if value >= 100 else f"{value:.1f} {unit}/s"


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.0f} MiB"


def ratio(measured: float, baseline: float, as_percent: bool = True) -> str:
    """measured / baseline as a percentage (or a factor, e.g. for latencies)."""
    if not baseline or math.isnan(measured) or math.isnan(baseline):
        return "n/a"
    value = measured / baseline
    return f"{value * 100:.0f}%" if as_percent else f"{value:.1f}×"


def markdown(sections: list[Section], facts: dict[str, str], started: str, wall_seconds: float) -> str:
    """The whole report: table, machine, then each benchmark's method and settings."""
    rows = [row for s in sections for row in s.rows]
    out = [
        "# mjq benchmarks",
        "",
        f"`make bench` on {started}, {wall_seconds / 60:.1f} min wall time. Every baseline was measured in the "
        "same run on the same machine. Regenerate with `make bench`; the numbers move with the machine's load.",
        "",
        table(rows),
        "",
        "What limits each figure, found by profiling: docs/architecture.md, \"Performance\".",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in facts.items()],
        "",
    ]
    for section in sections:
        out += [f"## {section.id}: {section.title}", ""]
        if section.error:
            out += [f"**Did not complete:** {section.error}", ""]
        out += [*[f"- {note}" for note in section.notes], f"- wall time: {section.seconds:.0f} s", ""]
    return "\n".join(out)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
