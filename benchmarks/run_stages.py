"""Run DVC stages one at a time and record each one's wall time and peak memory.

    python -m benchmarks.run_stages limpq@resnet20 report    # dvc repro -s, in order
    python -m benchmarks.run_stages --table                        # the Markdown table
    python -m benchmarks.run_stages --update-doc docs/pipeline.md  # the table, in that page

Each stage runs as ``dvc repro -s STAGE`` in a child process; its wall seconds and the peak
resident memory of its largest descendant (``ru_maxrss`` of the children, MiB) are merged
into ``results/stage_times.json`` with the machine's CPU, core count and the
date. ``docs/pipeline.md``'s table is this script's ``--table`` output. Other work on the
machine at the same time slows the stages: the file says so when ``--note`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from mpqbench.results import cpu_description
from mpqbench.scale_out import GRID_PREFIXES, stage_graph

OUT = Path("results/stage_times.json")  # outside results/benchmarks, a dep of the report
PROBE = ("import resource, subprocess, sys\n"
         "rc = subprocess.run(['dvc', 'repro', '-s', sys.argv[1]]).returncode\n"
         "open(sys.argv[2], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN)"
         ".ru_maxrss))\n"
         "sys.exit(rc)\n")


def load() -> dict:
    return json.loads(OUT.read_text()) if OUT.is_file() else {"stages": {}}


def run(stages: list[str], note: str | None) -> int:
    data = load()
    data.update({"cpu": cpu_description(), "cores": os.cpu_count(),
                 "date": date.today().isoformat()})
    if note:
        data["note"] = note
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")  # --note alone too
    for stage in stages:
        start = time.perf_counter()
        with tempfile.NamedTemporaryFile("r", suffix=".maxrss") as peak_file:
            # a fresh process per stage, so that its children's peak is this stage's alone
            done = subprocess.run([sys.executable, "-c", PROBE, stage, peak_file.name])
            seconds = time.perf_counter() - start
            peak = int(peak_file.read() or 0) / 1024  # KiB -> MiB
        data["stages"][stage] = {"seconds": round(seconds, 1), "peak_rss_mib": round(peak),
                                 "returncode": done.returncode}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"{stage}: {seconds:.0f} s, peak {peak:.0f} MiB, exit {done.returncode}")
        if done.returncode:
            return done.returncode
    return 0


def table() -> str:
    """The stages of the current dvc.yaml that have a measured time (entries of stages that
    no longer exist are left out), their total, and the grid's share of it."""
    data = load()
    current = stage_graph()
    rows = ["| stage | seconds | peak memory (MiB) |", "| --- | --- | --- |"]
    total = grid = 0.0
    for stage, entry in data["stages"].items():
        if stage not in current:
            continue
        total += entry["seconds"]
        grid += entry["seconds"] if stage.startswith(GRID_PREFIXES) else 0.0
        peak = entry.get("peak_rss_mib")
        rows.append(f"| `{stage}` | {entry['seconds']:,.0f} | "
                    f"{'not recorded' if peak is None else f'{peak:,}'} |")
    rows.append(f"| all of the above | {total:,.0f} ({total / 60:.0f} min) | |")
    rows.append(f"| of which the grid (`allocate@`, `evaluate@`) | {grid:,.0f} "
                f"({grid / 60:.0f} min) | |")
    head = (f"Measured on {data.get('date')}: {data.get('cpu')}, {data.get('cores')} cores"
            + (f"; {data['note']}" if data.get("note") else "") + ".")
    return head + "\n\n" + "\n".join(rows)


START, END = "<!-- stage-times:start -->", "<!-- stage-times:end -->"


def update_doc(path: Path) -> None:
    """Replace the text between the stage-times markers of ``path`` with ``table()``."""
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table()}\n{END}{tail}")
    print(f"updated the stage-time table in {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stages", nargs="*", help="DVC stage names, run in this order")
    parser.add_argument("--table", action="store_true", help="print the Markdown table")
    parser.add_argument("--note", default=None, help="saved with the figures")
    parser.add_argument("--update-doc", type=Path, default=None,
                        help="write the table between the stage-times markers of this file")
    args = parser.parse_args(argv)
    if args.table:
        print(table())
        return 0
    if args.update_doc:
        update_doc(args.update_doc)
        return 0
    return run(args.stages, args.note)


if __name__ == "__main__":
    sys.exit(main())
