"""The benchmarks' results: every run kept as JSON, docs/benchmarks.md made from the newest of each.

A benchmark script ends with record(name, title, markdown, data): one JSON line appended to bench/results/NAME.jsonl
(date, machine, commit, the command, its markdown and its raw numbers), never overwritten. `python bench/report.py`
(the last step of `make bench`) writes docs/benchmarks.md anew from the newest line of each file, in SECTIONS'
order, each under its machine, date and command. The narrative of earlier runs is docs/benchmarks-history.md.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "benchmarks.md"
# bench/results/NAME.jsonl, in the order docs/benchmarks.md shows them (the script that writes each: its `record` call)
SECTIONS = ("plan", "plan_time", "plan_speed", "gpu_plan", "run", "longdoc_eval", "longdoc", "serve", "cpu_paths", "soak",
            "overhead", "overhead_contention", "qwen3_shape", "multiturn", "drafting", "determinism",
            "slot_steps", "step_cpu", "padding", "sampling", "fleet", "ab")


def machine() -> str:
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name or 'unknown CPU'}, {os.cpu_count()} cores"


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (done.stdout.strip() or "unknown") + ("+changes" if dirty else "")


def record(name: str, markdown: str, data: object = None, title: str | None = None) -> Path:
    """Append this run to bench/results/NAME.jsonl and print its markdown; its title: `title`, else the markdown's
    first `## ` heading (taken out of it)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = markdown.strip().splitlines()
    if title is None and lines and lines[0].startswith("## "):
        title, markdown = lines[0][3:].strip(), "\n".join(lines[1:])
    title = title or name
    entry = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "machine": machine(), "commit": _commit(),
             "command": shlex.join([".venv/bin/python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
             "title": title, "markdown": markdown.strip(), "data": data}
    path = RESULTS / f"{name}.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    print(markdown)
    print(f"recorded in {path.relative_to(ROOT)}; `python bench/report.py` rewrites docs/benchmarks.md")
    return path


def runs(name: str) -> list[dict]:
    path = RESULTS / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def render() -> str:
    out = ["# Benchmarks", "",
           "The newest result of each benchmark, written by `make bench` (`bench/report.py`) from `bench/results/`, "
           "which keeps every run as JSON. Do not edit by hand: the commentary and the earlier runs are in "
           "[benchmarks-history.md](benchmarks-history.md). Timings on these shared machines are noisy: a noisy "
           "figure is the median over its repeats with the spread (min-max), never the best run.", ""]
    for name in SECTIONS:
        rs = runs(name)
        if not rs:
            continue
        last = rs[-1]
        origin = f" (imported from {last['imported']})" if last.get("imported") else ""
        out += [f"## {last['title']}", "",
                f"*{last['machine']}, {last['date']}, commit {last['commit']}{origin}; `{last['command']}`; "
                f"{len(rs)} run{'s' if len(rs) > 1 else ''} in `bench/results/{name}.jsonl`.*", "",
                last["markdown"], ""]
        out += across_runs(rs)
    return "\n".join(out)


def across_runs(rs: list[dict]) -> list[str]:
    """For a benchmark that records per-cell ratios (overhead_bench): each cell's ratio over every recorded run,
    median (min-max), so that no single run, the best or the newest, is the headline."""
    per_cell: dict[str, list[float]] = {}
    for r in rs:
        for cell, v in ((r.get("data") or {}).get("cells") or {}).items():
            per_cell.setdefault(cell, []).append(v["ratio"])
    if not per_cell:
        return []
    rows = [f"| {cell} | {len(v)} | **{statistics.median(v):.2f}** ({min(v):.2f}-{max(v):.2f}) |"
            for cell, v in per_cell.items()]
    return ["Over every recorded run, each run's median ratio:", "", "| model, mode, clients | runs | ratio |",
            "|---|---:|---:|", *rows, ""]


def main() -> None:
    OUT.write_text(render())
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
