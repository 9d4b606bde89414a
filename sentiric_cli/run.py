"""`sentiric run`: one prompt over a document of any length: one shifting window, or map-reduce over chunks."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from sentiric_cli.bundled import model_path
from sentiric_cli.engine import llamalog
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.prompt import INSTRUCTION, byte_offsets
from sentiric_cli.engine.types import Piece, Record, Request
from sentiric_cli.errors import SentiricError
from sentiric_cli.longdoc import STRATEGIES, LongRecord, PhaseProgress, answer
from sentiric_cli.longdoc.kinds import KINDS
from sentiric_cli.longdoc.mapreduce import record_dict
from sentiric_cli.settings import load_settings

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
    strategy: str | None = typer.Option(None, "--strategy", "-s", help=f"Long documents: {' | '.join(STRATEGIES)} "
                                        "(auto: one read when it fits, else map; docs/run.md)."),
    kind: str | None = typer.Option(None, "--kind", "-k", help=f"map: the question's kind, {' | '.join(KINDS)} "
                                    "(default: from its wording; docs/run.md)."),
    threads: int | None = typer.Option(None, "--threads", "-t", min=1, max=256,
                                       help="map: chunks read at once (each its own KV window)."),
    backend: list[str] = typer.Option([], "--backend", "-b", help="map: an OpenAI-compatible server that reads the "
                                      "chunks instead of the local model (repeatable; URL#model picks a model; "
                                      "docs/scale.md). --model then gives only the vocabulary."),
    backend_slots: int | None = typer.Option(None, "--backend-slots", min=1, max=1024,
                                             help="--backend: requests in flight per backend (default: its /props)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (answer + record) instead of streaming."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show llama.cpp's log on stderr."),
) -> None:
    """Answer PROMPT over a document of any length, in bounded memory.

    auto reads the document once when it fits the window; otherwise map reads it in chunks, `threads` at a
    time, and reduces their partial answers, citing where the answer came from. window streams it through one
    shifting window. The summary on stderr says what was read and where the answer came from; --json has it all.
    """
    if not prompt.strip():
        raise SentiricError("the prompt is empty", 'give a question, e.g. sentiric run -f doc.txt "What is the pass key?"')
    if strategy is not None and strategy not in STRATEGIES:
        raise SentiricError(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}", "see docs/run.md")
    if kind is not None and kind not in KINDS:
        raise SentiricError(f"--kind {kind!r} is not one of {', '.join(KINDS)}", "see docs/run.md")
    overrides = {"model": model, "context_size": context, "max_tokens": max_tokens, "temperature": temperature,
                 "seed": seed, "n_keep": n_keep, "strategy": strategy, "threads": threads,
                 "backends": backend or None, "backend_slots": backend_slots}
    if any(not s for s in stop):
        raise SentiricError("--stop: an empty string would end the answer at once", "give the text to stop at")
    settings = load_settings(profile, overrides)
    document = _read_document(file)
    if not document or settings.strategy == "window":
        settings.threads = 1  # one stream through one window: one KV stream, not THREADS of them
    llamalog.set_verbose(verbose)
    err = Console(stderr=True)
    base = Request.from_settings(settings, [], stop=tuple(stop))
    if settings.backends:
        rec = _remote(settings, prompt, document, instruction, raw, base, kind, as_json, err)
        if as_json:
            print(json.dumps({"answer": rec.answer, "strategy": rec.strategy, "longdoc": record_dict(rec)}, indent=2))
        else:
            sys.stdout.write("\n")
            err.print(backend_summary(rec), markup=False, highlight=False, soft_wrap=True)
        return
    with Engine(settings, model_path(settings.model)) as engine:
        engine.measure_drafts()  # with draft_tokens: what a step of 1 + k rows costs here (engine/draft.py)
        rec = _stream(lambda progress: answer(engine, prompt, document, settings.strategy, instruction=instruction,
                                              raw=raw, base=base, progress=progress, kind=kind),
                      as_json, err, len(document or prompt))
        window = rec.window_record
        offsets = byte_offsets(engine.model, rec.tokens) if document and rec.strategy != "map" else None
        cpu = engine.cpu.path
    if as_json:
        out = {"answer": rec.answer, "strategy": rec.strategy, "threads": settings.threads,
               "record": _record_dict(window, offsets) if window else None, "longdoc": record_dict(rec),
               "cpu_path": cpu}
        print(json.dumps(out, indent=2))
    else:
        sys.stdout.write("\n")
        text = summary(window, offsets) if window is not None else map_summary(rec, settings.threads)
        err.print(text, markup=False, highlight=False, soft_wrap=True)
    if rec.finish_reason == "interrupted":
        raise typer.Exit(130)


def _remote(settings, prompt: str, document: str | None, instruction: str, raw: bool, base: Request,
            kind: str | None, as_json: bool, err: Console) -> LongRecord:
    """The map-reduce with the backends reading (longdoc/remote.py). The document is cut with the vocabulary of
    the GGUF given (--model, a profile or the environment: loaded vocabulary only), else of the first backend with
    a /tokenize, else of the bundled model; `remote.check` makes sure every backend reads those tokens alike."""
    from sentiric_cli.engine.bindings import Model
    from sentiric_cli.longdoc import remote
    from sentiric_cli.longdoc.vocab import BackendVocab

    with remote.connect(settings.backends, settings.backend_api_key, settings.backend_timeout,
                        settings.backend_slots) as fleet:
        found: BackendVocab | None = None
        if "model" not in settings.model_fields_set:
            for b in fleet.backends:
                if (found := BackendVocab.of(fleet.http, b.url)) is not None:
                    source = f"{b.url}/tokenize"
                    break
        model: BackendVocab | Model
        if found is None:
            path = model_path(settings.model)
            model, source = Model(path, settings, vocab_only=True), str(path)
        else:
            model = found
        try:
            remote.check(fleet, model)
            window = fleet.window or settings.context_size
            rec = _stream(lambda progress: remote.answer(fleet, model, window, prompt, document, settings.strategy,
                                                         instruction=instruction, raw=raw, base=base,
                                                         progress=progress, kind=kind),
                          as_json, err, len(document or prompt))
        finally:
            model.close()
    rec.vocabulary = source
    return rec


def backend_summary(r: LongRecord) -> str:
    """What `run --backend` did: the map's summary (or the one read), each backend's share, the retries."""
    head = map_summary(r, sum(b["slots"] for b in r.backends)) if r.strategy == "map" else \
        f"read {r.document_tokens:,} document tokens in one request"
    shares = ", ".join(f"{b['url']} {b['requests']} request{'s' if b['requests'] != 1 else ''}"
                       + (f" ({b['failures']} failed)" if b["failures"] else "") for b in r.backends)
    retried = f"; {len(r.retried)} sent again after a backend failed" if r.retried else ""
    return f"{head}; backends: {shares}{retried}"


def _read_text_bytes(f, where: str) -> bytes:
    """Read in 1 MiB pieces, checking as it goes: a device or a pipe has no size to check first (/dev/zero)."""
    parts, total = [], 0
    while chunk := f.read(1 << 20):
        if b"\x00" in chunk:
            raise SentiricError(f"{where}: looks binary (NUL bytes), not text", "convert it to plain text first")
        total += len(chunk)
        if total > MAX_DOCUMENT:
            raise SentiricError(f"{where}: larger than 1 GiB", "split the document")
        parts.append(chunk)
    return b"".join(parts)


def _read_document(file: Path | None) -> str | None:
    if file is not None:
        if not file.exists():
            raise SentiricError(f"{file}: no such file", "check the --file path")
        if file.is_dir():
            raise SentiricError(f"{file}: is a directory", "give a text file")
        where = str(file)
        try:
            with file.open("rb") as f:
                raw = _read_text_bytes(f, where)
        except OSError as e:
            raise SentiricError(f"{file}: cannot read ({e.strerror or e})") from None
    elif not sys.stdin.isatty():
        where = "standard input"
        raw = _read_text_bytes(sys.stdin.buffer, where)
        if not raw:
            return None
    else:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SentiricError(f"{where}: not UTF-8 text (bad byte at {e.start})", "convert it to UTF-8 first") from None


def _stream(make_events, as_json: bool, err: Console, chars: int) -> LongRecord:
    """Show each phase's progress on stderr, the answer on stdout; Ctrl-C ends with what there is (exit 130)."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                   TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
    tasks: dict[str, TaskID] = {"tokenize": bar.add_task("tokenizing (characters)", total=max(chars, 1))}
    events = make_events(lambda done, _total: bar.update(tasks["tokenize"], completed=done))
    record = None
    with bar:
        try:
            for ev in events:
                if isinstance(ev, PhaseProgress):
                    label = {"read": "reading (tokens)", "map": "map (chunks read)"}.get(ev.phase) or (
                        ev.phase + (" (groups)" if ev.phase.startswith("reduce") else " (requests)"))
                    if ev.phase not in tasks:
                        tasks[ev.phase] = bar.add_task(label, total=max(ev.total, 1))
                    if ev.shares:  # run --backend: who answered how many so far
                        label += " " + ", ".join(f"{urlsplit(u).netloc}: {n}" for u, n in ev.shares.items())
                    bar.update(tasks[ev.phase], completed=ev.done, total=max(ev.total, 1), description=label)
                elif isinstance(ev, Piece) and not as_json:
                    bar.stop()
                    sys.stdout.write(ev.text)
                    sys.stdout.flush()
                elif isinstance(ev, LongRecord):
                    record = ev
        except KeyboardInterrupt:  # Ctrl-C while we were printing: stop cleanly, keep what came
            for ev in _drain(events):
                if isinstance(ev, Piece) and not as_json:
                    sys.stdout.write(ev.text)
                elif isinstance(ev, LongRecord):
                    record = ev
    if record is None:  # interrupted before anything was read (e.g. while tokenizing)
        err.print("sentiric: interrupted before an answer; nothing was generated", markup=False)
        raise typer.Exit(130)
    return record


def _drain(events):
    try:
        ev = events.throw(KeyboardInterrupt())
        yield ev
        yield from events
    except (StopIteration, KeyboardInterrupt):  # nothing left to end cleanly (e.g. interrupted between chunks)
        return


def map_summary(r: LongRecord, threads: int) -> str:
    what = "chunks" if r.kind == "overview" else "passages"
    parts = [f"map ({r.kind}): {len(r.chunks)} {what} of up to {r.chunk_tokens:,} tokens (overlap {r.overlap_tokens}) "
             f"from {r.document_tokens:,} document tokens, {threads} at a time"]
    if r.kind != "overview":
        # the sentences that hold the question's words are listed after the passages read (kept, or unanswered: the
        # reader, given one alone, said it does not answer)
        read = [p for p in r.partials if p.verdict not in ("sentence", "unanswered")]
        said = [p for p in read if p.verdict == "answer"]
        kept = sum(p.verdict == "sentence" for p in r.partials)  # a list can keep several (parallel sentences)
        unanswered = sum(p.verdict == "unanswered" for p in r.partials)
        if not kept:
            held = (f" (read alone, {'the sentence' if unanswered == 1 else f'{unanswered} sentences'} that "
                    f"{'holds' if unanswered == 1 else 'hold'} the question's words did not answer)" if unanswered else "")
        elif r.kind != "list":
            held = " (the sentence that holds the question's words answered)"
        else:
            held = (" (with the sentence that holds the question's words)" if kept == 1
                    else f" (with the {kept} sentences that hold the question's words)")
        parts.append(f"{len(read)} read for an answer, {len(said)} supported{held}")
    if r.found:
        cites = ", ".join(f"{what[:-1]} {c} = bytes {s:,}..{e:,}" for c, (s, e) in zip(r.cited_chunks, r.citations,
                                                                                       strict=True))
        parts.append(f"answer drew on {cites}")
        if r.reduce_rounds:
            parts.append(f"{r.reduce_rounds} reduce round{'s' if r.reduce_rounds != 1 else ''}")
    else:
        parts.append("nothing in the document supported an answer")
    parts.append(", ".join(f"{p.name} {p.tokens_read:,} tokens read in {p.seconds:.1f} s" for p in r.phases))
    return "; ".join(parts)


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
