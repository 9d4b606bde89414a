"""`sentiric plan`: parse options, call the planner, render (tables, --json, --write-profile)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .bundled import model_path
from .device import select_device
from .errors import SentiricError
from .gguf_header import read_header
from .memory import MiB
from .modelinfo import model_info
from .planner import Plan, make_plan
from .settings import load_settings, to_yaml

VERDICT_STYLE = {"very safe": "bold green", "safe": "green", "risky": "yellow", "does not fit": "bold red"}


def plan(
    model: str | None = typer.Argument(None, help="The .gguf model; default: the profile's, else the bundled test model."),
    profile: str | None = typer.Option(None, "--profile", "-p", help="Profile name (profiles/NAME.yaml) or path."),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU index from NVML (N, or N:M for MIG slice M)."),
    vram: str | None = typer.Option(None, "--vram", help="Plan for a GPU of this size you are not on (e.g. 6GiB)."),
    context: int | None = typer.Option(None, "--context", "-c", min=16, help="Pin tokens of context per thread."),
    threads: int | None = typer.Option(None, "--threads", "-t", min=1, max=256, help="Pin requests served at once."),
    gpu_layers: int | None = typer.Option(None, "--gpu-layers", "-ngl", min=-1, help="Pin layers offloaded (-1 all)."),
    cache_type: str | None = typer.Option(None, "--cache-type", help="Pin the KV cache type for K and V (f16, q8_0, q4_0 ...)."),
    flash_attn: bool | None = typer.Option(None, "--flash-attn/--no-flash-attn", help="Pin flash attention."),
    swa_full: bool | None = typer.Option(None, "--swa-full/--no-swa-full", help="Pin a full-size sliding-window cache."),
    ubatch: int | None = typer.Option(None, "--ubatch", min=1, help="Pin the physical batch size."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    write_profile: Path | None = typer.Option(None, "--write-profile", help="Write the recommendation as a profile YAML."),
    force: bool = typer.Option(False, "--force", help="Let --write-profile replace an existing file."),
) -> None:
    """What fits? Plan weights, KV cache and compute for a model on this machine's GPU (or RAM).

    Exit code 0 when the recommendation fits, 1 when nothing fits, 2 on bad input.
    """
    overrides = {"model": model, "context_size": context, "threads": threads, "gpu_layers": gpu_layers,
                 "cache_type_k": cache_type, "cache_type_v": cache_type, "flash_attn": flash_attn,
                 "swa_full": swa_full, "ubatch_size": ubatch}
    if ubatch is not None:  # a physical batch larger than the logical one lifts it, as llama.cpp needs
        without = load_settings(profile, {**overrides, "ubatch_size": None})
        overrides["batch_size"] = ubatch if without.batch_size < ubatch else None
    settings = load_settings(profile, overrides)
    # whatever a profile, the environment or a flag set is fixed; the planner chooses the rest
    pinned = set(settings.model_fields_set) - {"model"}
    path = model_path(settings.model)
    header = read_header(path)
    info = model_info(header)
    device = select_device(gpu, vram)
    result = make_plan(header, info, device, settings, pinned)
    if write_profile:
        _write(write_profile, result, force)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        render(result, Console(), Console(stderr=True))
    raise typer.Exit(0 if result.fits else 1)


def _write(target: Path, result: Plan, force: bool) -> None:
    if target.exists() and not force:
        raise SentiricError(f"{target} exists; not overwriting it", "pass --force, or choose another file")
    if target.is_dir():
        raise SentiricError(f"{target} is a directory", "give a file name ending in .yaml")
    command = " ".join(["sentiric", *sys.argv[1:]])  # the command that wrote it, to re-run or adjust
    comment = (f"written by `{command}`\nfor {result.model.name} on {result.device.name}\n"
               f"{_gib(result.memory.need_bytes)} needed of {_gib(result.device.free_bytes)} free: "
               f"{result.memory.verdict}")
    text = to_yaml(result.recommendation, comment)
    # write beside the target, then link (refuses an existing file atomically) or replace (--force):
    # an interrupted write never leaves half a profile, and a file that appears meanwhile is kept
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=".sentiric-", suffix=".yaml")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes 0600; a new profile is an ordinary file, a replaced one keeps its mode (a 0600 one stays so)
        mode = target.stat().st_mode & 0o7777 if force and target.exists() else 0o666 & ~umask
        os.chmod(tmp, mode)
        if force:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)
    except FileExistsError:
        raise SentiricError(f"{target} exists; not overwriting it", "pass --force, or choose another file") from None
    except OSError as e:
        raise SentiricError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def _mib(n: int) -> str:
    return f"{n / MiB:,.0f} MiB"


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"


def render(p: Plan, out: Console, err: Console) -> None:
    info, dev, m = p.model, p.device, p.memory
    for w in p.warnings:
        err.print(f"[yellow]warning:[/] {w}")
    out.print(f"[bold]{info.name}[/] ({info.arch}, {info.n_layer} layers, vocabulary {info.n_vocab:,}) "
              f"on [bold]{dev.name}[/]: {_gib(dev.free_bytes)} free of {_gib(dev.total_bytes)}")
    s = p.shape
    knobs = (f"cache {s.cache_type_k}/{s.cache_type_v}, flash attention {'on' if s.flash_attn else 'off'}"
             + (f", swa_full {'on' if s.swa_full else 'off'}" if info.has_swa else "")
             + (f", {s.gpu_layers}/{info.n_layer + 1} layers on GPU" if dev.is_gpu else ""))
    t = Table(title=f"Options ({knobs})", title_justify="left")
    for col in ("context", "threads", "KV / thread", "KV total", "total on device", "verdict"):
        t.add_column(col, justify="left" if col == "verdict" else "right")
    for o in p.options:
        mark = o.context == s.context and o.threads == s.threads
        t.add_row(f"{o.context:,}", str(o.threads), _mib(o.kv_bytes_per_thread), _mib(o.kv_bytes),
                  _mib(o.total_device_bytes), f"[{VERDICT_STYLE[o.verdict]}]{o.verdict}[/]" + (" ◀" if mark else ""))
    out.print(t)

    b = Table(title=f"Breakdown: context {s.context:,} x {s.threads} thread(s)", title_justify="left")
    b.add_column("part")
    b.add_column("bytes", justify="right")
    rows = [("weights on device" if dev.is_gpu else "weights", m.weights_device_bytes)]
    if dev.is_gpu:
        rows.append(("weights on host", m.weights_host_bytes))
    rows += [("KV cache", m.kv_device_bytes), ("compute buffer", m.compute_bytes),
             ("total allocated on device", m.total_device_bytes), ("runtime margin", m.margin_bytes),
             ("needed", m.need_bytes), ("free", dev.free_bytes)]
    for name, n in rows:
        b.add_row(name, _mib(n))
    out.print(b)

    e = Table(title="Where each number comes from", title_justify="left")
    for col in ("what", "value", "source"):
        e.add_column(col, overflow="fold")
    for row in p.explain:
        e.add_row(*row)
    out.print(e)

    c = Table(title="Choices: device memory against the alternative", title_justify="left")
    for col in ("choice", "instead of", "effect", "note"):
        c.add_column(col, justify="right" if col == "effect" else "left", overflow="fold")
    for sv in p.savings:
        effect = f"saves {_mib(sv.saves_bytes)}" if sv.saves_bytes >= 0 else f"costs {_mib(-sv.saves_bytes)}"
        c.add_row(sv.choice, sv.alternative, effect, sv.note)
    out.print(c)

    verdict = f"[{VERDICT_STYLE[m.verdict]}]{m.verdict}[/]"
    head = "Recommended profile" if p.fits else "Nothing fits; the smallest option"
    out.print(f"[bold]{head}[/] ({_gib(m.need_bytes)} needed, {verdict}); save it with --write-profile FILE:")
    out.print(to_yaml(p.recommendation), markup=False, highlight=False)
    for n in p.notes:
        out.print(f"note: {n}", markup=False, highlight=False)
    sys.stdout.flush()
