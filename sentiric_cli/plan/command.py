"""`sentiric plan`: parse options, call the planner, render (tables, --json, --write-profile)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console

from sentiric_cli.bundled import model_path
from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.gguf.remote import Traffic, is_remote, read_remote_model
from sentiric_cli.gguf.shards import read_model
from sentiric_cli.plan.device import host_device, select_devices
from sentiric_cli.plan.layout import CPU, override_places
from sentiric_cli.plan.planner import Plan, make_plan
from sentiric_cli.plan.render import render
from sentiric_cli.plan.speed import bandwidths, cpu_peak_flops, parse_bandwidth
from sentiric_cli.plan.usage import NO_FIT, Extra, layer_rows
from sentiric_cli.settings import load_settings, to_yaml

EXPS = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"  # llama.cpp's --cpu-moe pattern


def plan(
    model: str | None = typer.Argument(None, help="The .gguf model: a file, an https:// URL or hf://ORG/REPO/FILE.gguf "
                                       "(only the header is read); default: the profile's, else the bundled test model."),
    revision: str | None = typer.Option(None, "--revision", help="The branch, tag or commit of an hf:// model "
                                        "(default main)."),
    profile: str | None = typer.Option(None, "--profile", "-p", help="Profile name (profiles/NAME.yaml) or path."),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU index from NVML (N, N:M for MIG slice M), a list (0,1) "
                                   "or all."),
    vram: str | None = typer.Option(None, "--vram", help="Plan for GPUs you are not on: one size (6GiB) or one per GPU "
                                    "(24GiB,24GiB)."),
    ram: str | None = typer.Option(None, "--ram", help="Plan host RAM for a machine you are not on (64GiB); default: "
                                   "this machine's available memory."),
    bandwidth: str | None = typer.Option(None, "--bandwidth", help="Memory bandwidth for the speed estimate: 60GB/s "
                                         "(host RAM), or host=60GB/s,gpu=936GB/s; default: measured here / NVML."),
    cache_ram: int | None = typer.Option(None, "--cache-ram", min=0, help="Pin serve's prompt cache in host RAM, in "
                                         "MiB (default 8192; checked against the RAM the plan leaves)."),
    mmap: bool | None = typer.Option(None, "--mmap/--no-mmap", help="Pin how host weights are held: mapped from the "
                                     "file (page cache, the default) or read into RAM."),
    tensor_split: str | None = typer.Option(None, "--tensor-split", "-ts", help="Pin the share of layers per GPU "
                                            "(3,1 or layer counts); default: by free memory, rebalanced."),
    kv_unified: bool = typer.Option(False, "--kv-unified", help="Plan one KV cache shared by all threads "
                                    "(llama-server's default when -np is auto)."),
    op_offload: bool | None = typer.Option(None, "--op-offload/--no-op-offload", help="Pin op offload (CPU layers' "
                                           "big matrix products on the GPU; llama.cpp's default: on)."),
    override_tensor: list[str] | None = typer.Option(None, "--override-tensor", "-ot", help="llama.cpp's tensor "
                                                     "override PATTERN=BUFFER (exps=CPU, or CUDA1); repeatable."),
    cpu_moe: bool = typer.Option(False, "--cpu-moe", help="Keep every MoE expert tensor in RAM (llama.cpp's -cmoe)."),
    n_cpu_moe: int = typer.Option(0, "--n-cpu-moe", min=0, max=4096, help="Keep the expert tensors of the first N "
                                  "layers in RAM (llama.cpp's -ncmoe)."),
    mmproj: Path | None = typer.Option(None, "--mmproj", help="Add a vision projector GGUF (its weights)."),
    draft: Path | None = typer.Option(None, "--draft", help="Add a draft model for speculative decoding."),
    measure: bool = typer.Option(False, "--measure", help="Also run llama.cpp's own dry run (no_alloc) and print it "
                                 "beside the formulas; its figures win where they differ."),
    layers: bool = typer.Option(False, "--layers", help="Show each layer: its device, cache kind, weights and KV."),
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
                 "swa_full": swa_full, "ubatch_size": ubatch, "tensor_split": tensor_split, "op_offload": op_offload,
                 "tensor_overrides": _overrides(override_tensor, cpu_moe, n_cpu_moe), "use_mmap": mmap,
                 "cache_ram": cache_ram}
    if ubatch is not None:  # a physical batch larger than the logical one lifts it, as llama.cpp needs
        without = load_settings(profile, {**overrides, "ubatch_size": None})
        overrides["batch_size"] = ubatch if without.batch_size < ubatch else None
    settings = load_settings(profile, overrides)
    # whatever a profile, the environment or a flag set is fixed; the planner chooses the rest
    pinned = set(settings.model_fields_set) - {"model"}
    given = parse_bandwidth(bandwidth)  # every flag checked before a remote header is read
    devices = select_devices(gpu, vram)
    host = host_device(ram)
    traffic = Traffic()
    if is_remote(settings.model):
        header = read_remote_model(str(settings.model), revision, traffic)
    elif revision:
        raise SentiricError("--revision is for hf:// models", "give hf://ORG/REPO/FILE.gguf --revision REV")
    else:
        header = read_model(model_path(settings.model))
    info = model_info(header)
    gpus = sum(d.is_gpu for d in devices)
    if not gpus and ram is not None:  # planning for host RAM: --ram is the device
        devices = (host,)
    if gpus and settings.tensor_split and len(settings.tensor_split) != gpus:
        raise SentiricError(f"tensor_split has {len(settings.tensor_split)} entries for {gpus} GPU(s)",
                            "give one share per GPU, e.g. --gpu 0,1 --tensor-split 3,1")
    try:
        override_places(header, tuple(settings.tensor_overrides), gpus)
    except ValueError as e:
        raise SentiricError(str(e), "name CPU or a planned GPU's buffer (CUDA0 for --gpu's first)") from None
    extras = _extras(mmproj, draft)
    bw = bandwidths(devices, given)
    peak, peak_how = cpu_peak_flops()
    result = make_plan(header, info, devices, settings, pinned, extras=extras, kv_unified=kv_unified, host=host,
                       bw=bw, peaks={CPU: peak} if peak else {}, peak_how=f"the CPU's peak: {peak_how}" if peak else "")
    if traffic.requests:
        result.notes.append(f"header read from {header.url}: {traffic.requests} request(s), "
                            + (f"{traffic.bytes / 1024:,.0f} KiB" if traffic.bytes else "from the cache (one HEAD)")
                            + f" of a {header.file_size / 1024**3:,.2f} GiB model")
    rows = layer_rows(header, info, devices, result.shape, result.memory) if layers else None
    compared = None
    if measure:
        from sentiric_cli.plan.measure import compare  # here: a dry run's subprocess machinery, for --measure only
        from sentiric_cli.plan.measure import measure as dry_run

        measured = dry_run(header, result.shape, settings.main_gpu)
        compared, notes = compare(result, header, measured)
        result.notes += notes
        result.fits = result.fits and result.memory.verdict != NO_FIT
    if write_profile:
        _write(write_profile, result, force)
    if as_json:
        doc = result.to_dict()
        if rows is not None:
            doc["layers"] = [asdict(r) for r in rows]
        if compared is not None:
            doc["measured"] = [asdict(c) for c in compared]
        print(json.dumps(doc, indent=2))
    else:
        # no emoji codes or highlighting: tables of numbers, and a faster start (rich loads both on first use)
        render(result, Console(emoji=False, highlight=False), Console(stderr=True, emoji=False, highlight=False),
               rows, compared)
    raise typer.Exit(0 if result.fits else 1)


def _overrides(entries: list[str] | None, cpu_moe: bool, n_cpu_moe: int) -> list[str] | None:
    """-ot entries, then llama.cpp's own shorthands for MoE experts (common.h LLM_FFN_EXPS_REGEX)."""
    out = [x for e in entries or () for x in e.split(",") if x.strip()]
    if cpu_moe:
        out.append(EXPS + "=CPU")
    if n_cpu_moe:  # one alternation instead of llama.cpp's pattern per layer: the same tensors
        out.append(rf"blk\.({'|'.join(map(str, range(n_cpu_moe)))}){EXPS}=CPU")
    return out or None


def _extras(mmproj: Path | None, draft: Path | None) -> tuple[Extra, ...]:
    out = []
    if draft is not None:
        h = read_model(draft)
        out.append(Extra("draft", h, model_info(h)))
    if mmproj is not None:
        out.append(Extra("mmproj", read_model(mmproj)))
    return tuple(out)


def _write(target: Path, result: Plan, force: bool) -> None:
    if target.exists() and not force:
        raise SentiricError(f"{target} exists; not overwriting it", "pass --force, or choose another file")
    if target.is_dir():
        raise SentiricError(f"{target} is a directory", "give a file name ending in .yaml")
    command = " ".join(["sentiric", *sys.argv[1:]])  # the command that wrote it, to re-run or adjust
    free = sum(d.free_bytes for d in result.devices)
    comment = (f"written by `{command}`\nfor {result.model.name} on {' + '.join(d.name for d in result.devices)}\n"
               f"{_gib(result.memory.need_bytes)} needed of {_gib(free)} free: {result.memory.verdict}")
    text = to_yaml(result.recommendation, comment)
    # write beside the target, then link (refuses an existing file atomically) or replace (--force):
    # an interrupted write never leaves half a profile, and a file that appears meanwhile is kept
    import tempfile  # here: only --write-profile writes

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


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"
