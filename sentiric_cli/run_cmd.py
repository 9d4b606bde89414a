"""`sentiric run`: one prompt over a document of any length, streamed through a shifting window."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from . import llama
from .bundled import model_path
from .engine import Engine, Piece, Record, Request
from .engine import Progress as Step
from .errors import SentiricError
from .prompt import INSTRUCTION, byte_offsets, layout
from .settings import load_settings

MAX_DOCUMENT = 1 << 30  # 1 GiB of text is far past any use; refuse before reading it into memory


def run(
    prompt: str = typer.Argument(..., help="The question or instruction (for a bare prompt: the text to continue)."),
    file: Path | None = typer.Option(None, "--file", "-f", help="The document; default: standard input when it is not a terminal."),
    profile: str | None = typer.Option(None, "--profile", "-p", help="Profile name (profiles/NAME.yaml) or path."),
    model: str | None = typer.Option(None, "--model", "-m", help="The .gguf model; default: the profile's, else the bundled one."),
    context: int | None = typer.Option(None, "--context", "-c", min=16, help="Tokens in the window."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", "-n", min=1, help="Most tokens to generate."),
    temperature: float | None = typer.Option(None, "--temperature", min=0.0, help="0 = greedy, deterministic."),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed."),
    n_keep: int | None = typer.Option(None, "--n-keep", min=-1, help="Tokens pinned at the head; -1 = instruction + question."),
    stop: list[str] = typer.Option([], "--stop", help="Stop when this text appears (repeatable)."),
    instruction: str = typer.Option(INSTRUCTION, "--instruction", help="Text pinned before the question."),
    raw: bool = typer.Option(False, "--raw", help="Ignore the model's chat template: plain text."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (answer + record) instead of streaming."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show llama.cpp's log on stderr."),
) -> None:
    """Answer PROMPT over a document of any length: the window shifts, memory stays bounded.

    The summary on stderr says what was kept and what was evicted; --json has it all.
    """
    if not prompt.strip():
        raise SentiricError("the prompt is empty", 'give a question, e.g. sentiric run -f doc.txt "What is the pass key?"')
    overrides = {"model": model, "context_size": context, "max_tokens": max_tokens, "temperature": temperature,
                 "seed": seed, "n_keep": n_keep, "threads": 1}  # one prompt: one KV stream, not THREADS of them
    settings = load_settings(profile, overrides)
    document = _read_document(file)
    llama.set_verbose(verbose)
    err = Console(stderr=True)
    with Engine(settings, model_path(settings.model)) as engine:
        lay = _layout(engine, prompt, document, instruction, raw, err)
        request = Request.from_settings(settings, lay.head, lay.body, lay.tail, stop=tuple(stop))
        record = _stream(engine, request, as_json, err)
        offsets = byte_offsets(engine.model, lay.body) if document else None
        cpu = engine.model.cpu.path
    if as_json:
        print(json.dumps({"answer": record.text, "record": _record_dict(record, offsets), "cpu_path": cpu}, indent=2))
    else:
        sys.stdout.write("\n")
        err.print(summary(record, offsets), markup=False, highlight=False, soft_wrap=True)
    if record.finish_reason == "interrupted":
        raise typer.Exit(130)


def _read_document(file: Path | None) -> str | None:
    if file is not None:
        if not file.exists():
            raise SentiricError(f"{file}: no such file", "check the --file path")
        if file.is_dir():
            raise SentiricError(f"{file}: is a directory", "give a text file")
        if file.stat().st_size > MAX_DOCUMENT:
            raise SentiricError(f"{file}: larger than 1 GiB", "split the document")
        try:
            raw = file.read_bytes()
        except OSError as e:
            raise SentiricError(f"{file}: cannot read ({e.strerror or e})") from None
        where = str(file)
    elif not sys.stdin.isatty():
        raw = sys.stdin.buffer.read(MAX_DOCUMENT + 1)
        where = "standard input"
        if not raw:
            return None
    else:
        return None
    if b"\x00" in raw[:65536]:
        raise SentiricError(f"{where}: looks binary (NUL bytes), not text", "convert it to plain text first")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SentiricError(f"{where}: not UTF-8 text (bad byte at {e.start})", "convert it to UTF-8 first") from None


def _layout(engine: Engine, prompt: str, document: str | None, instruction: str, raw: bool, err: Console):
    """Tokenize (a long document takes a while: a progress bar; Ctrl-C stops it like any other phase)."""
    bar = Progress(TextColumn("tokenizing"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                   console=err, transient=True, disable=not err.is_terminal)
    task = bar.add_task("tokenize", total=len(document or prompt))
    try:
        with bar:
            return layout(engine.model, prompt, document, instruction, raw,
                          progress=lambda done, _total: bar.update(task, completed=done))
    except KeyboardInterrupt:
        err.print("sentiric: interrupted while tokenizing the document; nothing was generated", markup=False)
        raise typer.Exit(130) from None


def _stream(engine: Engine, request: Request, as_json: bool, err: Console) -> Record:
    bar = Progress(TextColumn("reading"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} tokens"),
                   TextColumn("{task.fields[speed]:,.0f} tok/s"), TextColumn("{task.fields[shifts]} shifts"),
                   TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
    task = bar.add_task("prefill", total=len(request.head) + len(request.body) + len(request.tail), speed=0.0, shifts=0)
    events = engine.stream(request)
    record = None
    with bar:
        while record is None:
            try:
                for ev in events:
                    if isinstance(ev, Step):
                        bar.update(task, completed=ev.prefilled, speed=ev.tokens_per_s, shifts=ev.shifts)
                    elif isinstance(ev, Piece) and not as_json:
                        bar.stop()
                        sys.stdout.write(ev.text)
                        sys.stdout.flush()
                    elif isinstance(ev, Record):
                        record = ev
            except KeyboardInterrupt:  # Ctrl-C while we were printing: stop cleanly, keep what came
                for ev in _drain(events):
                    if isinstance(ev, Piece) and not as_json:
                        sys.stdout.write(ev.text)
                    elif isinstance(ev, Record):
                        record = ev
    return record


def _drain(events):
    try:
        ev = events.throw(KeyboardInterrupt())
        yield ev
        yield from events
    except StopIteration:
        return


def _record_dict(r: Record, offsets: list[int] | None) -> dict:
    d = asdict(r)
    for key in ("text", "tokens", "logits", "scored_tokens", "nll"):
        d.pop(key)
    if offsets:
        d["evicted_byte_spans"] = [(offsets[s], offsets[e]) for s, e in r.evicted_spans]
        d["kept_byte_spans"] = [(offsets[s], offsets[e]) for s, e in r.kept_spans]
    return d


def summary(r: Record, offsets: list[int] | None) -> str:
    parts = [f"read {r.prompt_tokens:,} tokens (head {r.head_tokens}, document {r.document_tokens:,}) "
             f"through a {r.context_size:,}-token window"]
    if r.path == "none":
        parts.append("all of it stayed in the window")
    else:
        how = f"{r.shifts} shifts" if r.path == "shift" else f"{r.shifts} recomputes ({r.recomputed_tokens:,} tokens re-read)"
        spans = ", ".join(_span(s, e, offsets) for s, e in r.evicted_spans) or "none of the document"
        kept = ", ".join(_span(s, e, offsets) for s, e in r.kept_spans) or "none of the document"
        parts.append(f"{how}; evicted {r.evicted_tokens:,} document tokens {spans}; kept {kept} and the pinned "
                     f"{r.n_keep} head tokens")
    parts.append(f"prefill {r.prefill_tokens_per_s:,.0f} tok/s, generation {r.generation_tokens_per_s:,.0f} tok/s, "
                 f"{r.generated_tokens} tokens ({r.finish_reason})")
    return "; ".join(parts)


def _span(s: int, e: int, offsets: list[int] | None) -> str:
    text = f"[{s:,}, {e:,})"
    if offsets:
        text += f" = bytes {offsets[s]:,}..{offsets[e]:,}"
    return text
