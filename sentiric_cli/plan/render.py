"""The plan as tables (rich): options, per-device breakdown, layers, the dry run, sources, choices."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from sentiric_cli.plan.memory import MiB
from sentiric_cli.plan.planner import Plan
from sentiric_cli.plan.usage import LayerRow
from sentiric_cli.settings import to_yaml

if TYPE_CHECKING:
    from sentiric_cli.plan.measure import Comparison

VERDICT_STYLE = {"very safe": "bold green", "safe": "green", "risky": "yellow", "does not fit": "bold red"}


def _mib(n: int) -> str:
    return f"{n / MiB:,.0f} MiB"


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"


def _verdict(v: str) -> str:
    return f"[{VERDICT_STYLE[v]}]{v}[/]"


def render(p: Plan, out: Console, err: Console, layers: list[LayerRow] | None = None,
           measured: list[Comparison] | None = None) -> None:
    info, m, s = p.model, p.memory, p.shape
    gpus = [d for d in p.devices if d.is_gpu]
    for w in p.warnings:
        err.print(f"[yellow]warning:[/] {w}")
    where = " + ".join(d.name for d in p.devices) if len(p.devices) > 1 else p.device.name
    free = sum(d.free_bytes for d in p.devices)
    total = sum(d.total_bytes for d in p.devices)
    out.print(f"[bold]{info.name}[/] ({info.arch}, {info.n_layer} layers, vocabulary {info.n_vocab:,}) "
              f"on [bold]{where}[/]: {_gib(free)} free of {_gib(total)}; {m.backend.upper()} build")
    knobs = (f"cache {s.cache_type_k}/{s.cache_type_v}, flash attention {'on' if s.flash_attn else 'off'}"
             + (f", swa_full {'on' if s.swa_full else 'off'}" if info.has_swa else "")
             + (", kv_unified" if s.kv_unified else "")
             + (f", {s.gpu_layers}/{info.n_layer + 1} layers on GPU" if gpus else ""))
    t = Table(title=f"Options ({knobs})", title_justify="left")
    cols = ["context", "threads", "KV / thread", "KV total", "total on " + ("GPUs" if gpus else "device")]
    cols += ["host RAM"] if gpus else []
    cols += ["decode tok/s", "verdict"]
    for col in cols:
        t.add_column(col, justify="left" if col == "verdict" else "right")
    for o in p.options:
        mark = o.context == s.context and o.threads == s.threads
        speed = "?" if o.decode_tps is None else f"{o.decode_tps:,.1f}" + (f" x {o.threads}" if o.threads > 1 else "")
        t.add_row(f"{o.context:,}", str(o.threads), _mib(o.kv_bytes_per_thread), _mib(o.kv_bytes),
                  _mib(o.total_device_bytes), *([_mib(o.host_bytes)] if gpus else []), speed,
                  _verdict(o.verdict) + (" ◀" if mark else ""))
    out.print(t)
    _breakdown(p, out)
    if layers is not None:
        _layers(layers, out)
    if measured is not None:
        _measured(measured, out)

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

    head = "Recommended profile" if p.fits else "Nothing fits; the smallest option"
    out.print(f"[bold]{head}[/] ({_gib(m.need_bytes)} needed, {_verdict(m.verdict)}); "
              "save it with --write-profile FILE:")
    out.print(to_yaml(p.recommendation), markup=False, highlight=False)
    for n in p.notes:
        out.print(f"note: {n}", markup=False, highlight=False)
    sys.stdout.flush()


def _breakdown(p: Plan, out: Console) -> None:
    m, s = p.memory, p.shape
    gpu = any(d.is_gpu for d in p.devices)
    b = Table(title=f"Breakdown: context {s.context:,} x {s.threads} thread(s)", title_justify="left")
    b.add_column("part")
    uses = list(m.devices) + ([m.host] if gpu and m.host is not None else [])
    for u in uses:
        b.add_column(f"GPU {u.index}" if u.index != "host" else "host RAM", justify="right")
    extra = any(u.extra_bytes for u in uses)
    weights = "weights (mapped)" if s.mmap and m.host_mapped_bytes else "weights"
    rows = [("layers", [u.layers for u in uses]),
            (weights, [_mib(u.weights_bytes) for u in uses]),
            ("KV cache", [_mib(u.kv_bytes) for u in uses]),
            ("compute buffer" + (" / host buffers" if len(uses) > len(m.devices) else ""),
             [_mib(u.compute_bytes) for u in uses])]
    if extra:
        rows.append(("draft / projector", [_mib(u.extra_bytes) for u in uses]))
    rows += [("total allocated", [_mib(u.total_bytes) for u in uses]),
             ("runtime margin", [_mib(u.margin_bytes) for u in uses]),
             ("needed", [_mib(u.need_bytes) for u in uses]),
             ("free", [_mib(u.free_bytes) for u in uses]),
             ("verdict", [_verdict(u.verdict) for u in uses])]
    for name, cells in rows:
        b.add_row(name, *cells)
    out.print(b)


def _layers(rows: list[LayerRow], out: Console) -> None:
    t = Table(title="Layers: where each lives and what it costs", title_justify="left")
    for col in ("layer", "device", "cache", "weights", "KV"):
        t.add_column(col, justify="right" if col in ("weights", "KV") else "left")
    for r in rows:
        t.add_row(r.name, r.device, r.kind, f"{r.weights_bytes / MiB:,.2f} MiB", f"{r.kv_bytes / MiB:,.2f} MiB")
    out.print(t)


def _measured(rows: list[Comparison], out: Console) -> None:
    t = Table(title="llama.cpp's own dry run (no_alloc) beside the formulas", title_justify="left")
    for col in ("what", "planned", "llama.cpp", "difference"):
        t.add_column(col, justify="left" if col == "what" else "right")
    for r in rows:
        diff = "exact" if r.planned == r.measured else f"{(r.planned / r.measured - 1) * 100 if r.measured else 0:+.1f}%"
        t.add_row(r.what, f"{r.planned / MiB:,.2f} MiB", f"{r.measured / MiB:,.2f} MiB", diff)
    out.print(t)
