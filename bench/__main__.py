"""`make bench`: run every benchmark against real PostgreSQL and Redis, print the table, write the report.

`python -m bench p1 p5` runs only the named benchmarks and writes their report beside the
logs in the run's temporary directory, so a partial run never replaces the committed one.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.harness import Stack, machine

#: Benchmark modules in the order they run (cheap and short first; P5's million rows late).
MODULES = {
    "p1": "bench.p1_submit",
    "p2": "bench.p2_latency",
    "p3": "bench.p3_throughput",
    "p4": "bench.p4_inflight",
    "p6": "bench.p6_overhead",
    "p5": "bench.p5_reads",
}
#: Another engineer's benchmark of webhook delivery; run when it exists.
WEBHOOKS_MODULE = "bench.webhooks"
RESULTS = Path(__file__).resolve().parent / "results"


def selected(names: list[str]) -> list[str]:
    modules = [MODULES[n] for n in names if n in MODULES] if names else list(MODULES.values())
    if not names or "webhooks" in names:
        if importlib.util.find_spec(WEBHOOKS_MODULE) is not None:
            modules.append(WEBHOOKS_MODULE)
    return modules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    names = [*MODULES, "webhooks"]
    parser.add_argument("only", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(names)} (default all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(names)}")
    started = datetime.now(UTC)
    t0 = time.monotonic()
    sections: list[report.Section] = []
    work_dir = Path(tempfile.mkdtemp(prefix="mjq-bench-"))
    print(f"mjq bench: logs in {work_dir / 'logs'}", flush=True)
    with Stack(work_dir) as stack:
        facts = machine(stack)
        for name in selected(args.only):
            module = importlib.import_module(name)
            print(f"-- {name} ...", flush=True)
            t_mod = time.monotonic()
            try:
                section: report.Section = module.run(stack)
            except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
                traceback.print_exc()
                section = report.Section(name.rsplit(".", 1)[-1], name, error=f"{type(exc).__name__}: {exc}")
            finally:
                stack.stop_all()
            section.seconds = time.monotonic() - t_mod
            sections.append(section)
            print(report.table(section.rows), flush=True)
    wall = time.monotonic() - t0
    # The machine may be shared: its load beside the figures says how much to trust them.
    facts["load average at end (1/5/15 min)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = [row for s in sections for row in s.rows]
    print(f"\n{report.table(rows)}\n\nwall time {wall / 60:.1f} min")
    text = report.markdown(sections, facts, started.strftime("%Y-%m-%d %H:%M UTC"), wall)
    out = work_dir / "partial.md" if args.only else RESULTS / "latest.md"
    report.write(out, text)
    print(f"report: {out}")
    failed = [s.id for s in sections if s.error]
    if failed:
        print(f"benchmarks that did not complete: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
