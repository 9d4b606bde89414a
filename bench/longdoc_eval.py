"""`make bench`, part 4: the long-document evaluation (issue 24): questions of every kind over real documents.

Documents: the licenses in bench/eval/docs/ and topics of Python's own documentation (pydoc_data.topics), 2x to
about 30x a 1024-token window. Questions and keywords: bench/eval/questions.yaml. Split before any tuning: a
question is in the test half when the SHA-1 of "document/question" is odd (and it was not tried while building).
Grading (keywords are regular expressions, case aside, white space normalized):
- lookup: every keyword group in the answer; list: the share of items named (recall); yes/no: the answer's
  first word; overview: at least 2 of its 3 topics named; absent: the answer is "not found".
- invented: an answer given (found) to a non-absent question that names none of what was expected (a wrong
  yes/no is wrong, not invented).
Also one window pass per document against the map (wall time), so the map's cost is seen beside it.

Run: .venv/bin/python bench/longdoc_eval.py [--half test|tune|all] [--docs gpl,apache] [--kinds lookup,absent]
     [--record]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from report import record

from sentiric_cli.bundled import bundled_model
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.cpupath import cpu_info, cpu_path
from sentiric_cli.engine.prompt import INSTRUCTION
from sentiric_cli.engine.types import Request
from sentiric_cli.longdoc import LongRecord, answer
from sentiric_cli.settings import Settings

WINDOW = 1024
EVAL = ROOT / "bench" / "eval"
KINDS = ("lookup", "list", "yesno", "overview", "absent")


def documents(spec: dict) -> dict[str, str]:
    import pydoc_data.topics as topics  # the standard library's own documentation
    out = {}
    for name, d in spec.items():
        out[name] = ((EVAL / "docs" / d["file"]).read_text() if "file" in d
                     else "\n\n".join(topics.topics[k] for k in d["topics"]))
    return out


def half(doc: str, q: dict) -> str:
    if q.get("seen"):
        return "tune"
    return "test" if hashlib.sha1(f"{doc}/{q['q']}".encode()).digest()[-1] % 2 else "tune"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def has(pattern: str, text: str) -> bool:
    return re.search(_norm(pattern), _norm(text), re.IGNORECASE) is not None


def grade(q: dict, rec: LongRecord) -> tuple[float, bool]:
    """(score 0..1, invented): see the module's docstring. A lookup is graded on its best answer, not on the
    conflicting answers shown beside it."""
    kind, expect = q["kind"], q["expect"]
    text = rec.answer.split(" (other passages say: ")[0]
    if kind == "absent":
        return (0.0 if rec.found else 1.0), False
    if not rec.found:
        return 0.0, False
    if kind == "yesno":
        first = (re.findall(r"[a-z]+", text.lower()) or [""])[0]
        score = float(first == expect[0])
    elif kind == "overview":
        score = float(sum(has(g, text) for g in expect) >= 2)
    elif kind == "list":
        score = sum(has(g, text) for g in expect) / len(expect)
    else:
        score = float(all(has(g, text) for g in expect))
    invented = kind != "yesno" and not any(has(g, text) for g in expect)
    return score, invented


def ask(engine: Engine, question: str, text: str, strategy: str = "auto") -> tuple[LongRecord, float]:
    t0 = time.perf_counter()
    rec = None
    for ev in answer(engine, question, text, strategy, instruction=INSTRUCTION, base=Request(head=[], max_tokens=48)):
        if isinstance(ev, LongRecord):
            rec = ev
    assert rec is not None
    return rec, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--half", choices=("test", "tune", "all"), default="test")
    ap.add_argument("--docs", default="", help="comma-separated document names (default: all)")
    ap.add_argument("--kinds", default="", help="comma-separated question kinds (default: all)")
    ap.add_argument("--record", action="store_true", help="write bench/results/longdoc_eval.jsonl")
    ap.add_argument("--rows", default="", help="also write each question's row (with every partial) to this file")
    args = ap.parse_args()
    if args.record and (args.docs or args.kinds):
        ap.error("--record writes the whole half: not with --docs or --kinds")
    spec = yaml.safe_load((EVAL / "questions.yaml").read_text())
    texts = documents(spec["documents"])
    chosen = [d for d in args.docs.split(",") if d] or list(texts)
    rows = []
    with Engine(Settings(context_size=WINDOW, threads=4, swa_full=True), bundled_model()) as e:
        for doc in chosen:
            text = texts[doc]
            tokens = len(e.model.tokenize(text))
            qs = [q for q in spec["questions"][doc] if (args.half == "all" or half(doc, q) == args.half)
                  and (not args.kinds or q["kind"] in args.kinds.split(","))]
            if not qs:
                continue
            _, window_s = ask(e, qs[0]["q"], text, "window")
            for q in qs:
                rec, seconds = ask(e, q["q"], text)
                score, invented = grade(q, rec)
                map_s = sum(p.seconds for p in rec.phases if p.name != "tokenize")
                rows.append(dict(doc=doc, times=round(tokens / WINDOW, 1), q=q["q"], kind=q["kind"],
                                 detected=rec.kind, score=score, invented=invented, found=rec.found,
                                 answer=rec.answer[:160], seconds=round(seconds, 1), map_seconds=round(map_s, 1),
                                 window_seconds=round(window_s, 1), half=half(doc, q),
                                 support=[p.support for p in rec.partials if p.chunk in rec.cited_chunks],
                                 relevance=[p.relevance for p in rec.partials if p.chunk in rec.cited_chunks],
                                 verdicts=[p.verdict for p in rec.partials],
                                 partials=[dict(answer=p.answer, verdict=p.verdict, relevance=p.relevance,
                                                support=p.support, grounding=p.grounding, chunk=p.chunk,
                                                confidence=p.confidence, evidence=p.evidence[:200])
                                           for p in rec.partials if rec.kind != "overview"]))
                print(f"{doc} {rows[-1]['times']}x [{q['kind']}->{rec.kind}] {score:.2f}{' INVENTED' if invented else ''} "
                      f"{q['q']!r} -> {rec.answer[:100]!r} ({seconds:.0f} s, window {window_s:.0f} s) "
                      f"support {rows[-1]['support']} verdicts {rows[-1]['verdicts']}", flush=True)
    if args.rows:
        Path(args.rows).write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = summary(rows)
    print(table)
    if args.record:
        title = (f"Long documents over real text: {args.half} half, bundled gemma 3 270M Q4_K_M, window {WINDOW}, "
                 f"CPU ({os.cpu_count()} cores, {cpu_info()[0] or 'unknown CPU'}), CPU path {cpu_path().path}")
        record("longdoc_eval", table, {"half": args.half, "rows": rows}, title=title)


TARGETS = {"lookup": "90%", "list": "75% recall", "yesno": "", "overview": "70%", "absent": "100%"}


def summary(rows: list[dict]) -> str:
    docs = sorted({(r["doc"], r["times"]) for r in rows}, key=lambda d: d[1])
    lines = ["Documents: " + ", ".join(f"{d} ({t}x)" for d, t in docs) + ". Graded by keywords "
             "(`bench/eval/questions.yaml`); the issue's targets beside each kind.", "",
             "| kind | questions | score | target | invented (found, nothing right) |", "|---|---|---|---|---|"]
    for kind in KINDS:
        rs = [r for r in rows if r["kind"] == kind]
        if rs:
            inv = sum(r["invented"] for r in rs)
            lines.append(f"| {kind} | {len(rs)} | {statistics.mean(r['score'] for r in rs):.0%} | {TARGETS[kind]} | "
                         f"{inv} |")
    others = [r for r in rows if r["kind"] != "absent"]
    if others:
        inv = sum(r["invented"] for r in others)
        lines.append(f"| all but absent | {len(others)} | | at most 5% invented | {inv} ({inv / len(others):.0%}) |")
    ratios = [r["map_seconds"] / r["window_seconds"] for r in rows if r["window_seconds"]]
    if ratios:
        lines.append("")
        lines.append(f"Map time over one window pass of the same document: median {statistics.median(ratios):.2f}x "
                     f"(range {min(ratios):.2f}-{max(ratios):.2f}), {len(ratios)} questions.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
