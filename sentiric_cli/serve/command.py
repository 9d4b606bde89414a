"""`sentiric serve`: an OpenAI-compatible server, THREADS requests at once from one loaded model."""

from __future__ import annotations

import signal
import socket
import sys
import threading

import typer

from sentiric_cli.bundled import model_path
from sentiric_cli.engine import llamalog
from sentiric_cli.engine.core import Engine
from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.gguf.shards import read_model
from sentiric_cli.plan.device import select_device
from sentiric_cli.plan.memory import MiB
from sentiric_cli.plan.planner import make_plan
from sentiric_cli.settings import Settings, load_settings


def _server(config, replica, timeout: float):
    """uvicorn's server, whose stop signal also starts the scheduler's drain (once the model is loaded): waiting
    requests get 503 at once and running ones `shutdown_timeout` seconds, so the whole stop takes that long, not
    twice."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if replica.app is not None:
                replica.app.state.scheduler.drain(timeout)
            super().handle_exit(sig, frame)

    return Server(config)


def _raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one (each client is a descriptor); returns the limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 65536


def _speed_settings(s: Settings) -> str:
    """For the banner: what the prompt cache in RAM, drafting and determinism are set to."""
    if s.deterministic:
        return ", deterministic"
    return ((f", prompt cache {s.cache_ram:,} MiB of RAM" if s.cache_ram else "")
            + (f", drafts of up to {s.draft_tokens} tokens" if s.draft_tokens else ""))


def serve(
    profile: str | None = typer.Option(None, "--profile", "-p", help="Profile name (profiles/NAME.yaml) or path."),
    model: str | None = typer.Option(None, "--model", "-m", help="The .gguf model; default: the profile's, else the bundled one."),
    host: str | None = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1: this machine only)."),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="Port (0 = any free port)."),
    threads: int | None = typer.Option(None, "--threads", "-t", min=1, max=256, help="Requests served at once."),
    context: int | None = typer.Option(None, "--context", "-c", min=16, help="Tokens of window per request."),
    embeddings: bool | None = typer.Option(None, "--embeddings/--no-embeddings",
                                           help="Serve /v1/embeddings (a second, small llama.cpp context)."),
    served_model_name: str | None = typer.Option(None, "--served-model-name", help="The model id to answer to "
                                                 "(default: the file's name); one name for several replicas."),
    api_key: str | None = typer.Option(None, "--api-key", help="Require this key (Authorization: Bearer KEY or x-api-key)."),
    cache_ram: int | None = typer.Option(None, "--cache-ram", min=0, help="MiB of host RAM for prompt caches of "
                                         "slots taken by other prompts (default 8192, as llama-server; 0 = off)."),
    draft: int | None = typer.Option(None, "--draft-tokens", min=0, max=64, help="Prompt-lookup drafting: most "
                                     "tokens checked per step from the request's own text (0 = off)."),
    deterministic: bool | None = typer.Option(None, "--deterministic/--no-deterministic", help="The same greedy "
                                              "answer for the same request under any load (slower)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show llama.cpp's log and each HTTP request."),
) -> None:
    """Serve the OpenAI API (chat, completions, responses, embeddings, models), /tokenize, /health, /metrics."""
    import uvicorn

    from sentiric_cli.serve.app import create_app
    from sentiric_cli.serve.protocol import protocol_class
    from sentiric_cli.serve.replica import Replica

    settings = load_settings(profile, {"model": model, "host": host, "port": port, "threads": threads,
                                       "context_size": context, "embeddings": embeddings, "api_key": api_key,
                                       "served_model_name": served_model_name, "cache_ram": cache_ram,
                                       "draft_tokens": draft, "deterministic": deterministic})
    path = model_path(settings.model)
    header = read_model(path)
    plan = make_plan(header, model_info(header), select_device(), settings, set(settings.model_fields_set) |
                     {"context_size", "threads", "gpu_layers", "cache_type_k", "cache_type_v", "flash_attn",
                      "swa_full", "ubatch_size"})
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it
    # Nagle held each keep-alive response behind the client's delayed ACK: 40 ms per request
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as e:
        raise SentiricError(f"cannot listen on {settings.host}:{settings.port} ({e.strerror or e})",
                            "choose another --port, or 0 for any free one") from None
    sock.listen(2048)  # from now on a connection waits in the backlog for uvicorn, never refused
    llamalog.set_verbose(verbose)
    bound = sock.getsockname()[1]
    name = settings.served_model_name or path.stem
    replica = Replica()
    protocol = protocol_class(settings.header_timeout)
    fds = _raise_fd_limit()
    config = uvicorn.Config(replica, log_level="info" if verbose else "warning", access_log=verbose, http=protocol,
                            limit_concurrency=max(64, fds - 64),  # past it 503, not a failed accept()
                            # a backstop only: the scheduler cuts running requests at shutdown_timeout
                            timeout_graceful_shutdown=int(settings.shutdown_timeout) + 5)
    server = _server(config, replica, settings.shutdown_timeout)
    engines: list[Engine] = []
    failed: list[BaseException] = []

    def load() -> None:
        """The model loads beside the listening server; a failure stops the server and is raised after it."""
        try:
            engine = Engine(settings, path)
            engines.append(engine)
            app = create_app(engine, settings, profile, model_id=name)
            m = plan.memory
            print(f"sentiric: serving {path.name} on http://{settings.host}:{bound} "
                  f"({settings.threads} threads x {settings.context_size} tokens, queue {settings.queue_size}"
                  f"{', API key required' if settings.api_key else ''}"
                  f"{', embeddings on' if settings.embeddings else ''}{_speed_settings(settings)})", file=sys.stderr)
            print(f"sentiric: plan on {plan.device.name}: weights {m.weights_device_bytes / MiB:,.0f} MiB + KV "
                  f"{m.kv_bytes / MiB:,.0f} MiB + compute {m.compute_bytes / MiB:,.0f} MiB = "
                  f"{m.total_device_bytes / MiB:,.0f} MiB ({m.verdict})", file=sys.stderr)
            print(f"sentiric: CPU path: {engine.cpu.describe()}", file=sys.stderr, flush=True)
            replica.app = app
            if server.should_exit:  # stopped while loading: drain what the app never took
                app.state.scheduler.drain(settings.shutdown_timeout)
        except BaseException as e:  # noqa: BLE001  # raised again in the main thread, after the server stops
            failed.append(e)
            server.should_exit = True

    loader = threading.Thread(target=load, name="sentiric-load", daemon=True)
    # a stop before uvicorn has its own handlers is a stop too; uvicorn shuts down gracefully on SIGTERM/SIGINT,
    # then re-raises the signal under the handler that was there before it: this one, harmless then, so a
    # requested stop exits 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: server.handle_exit(signum, frame))
    print(f"sentiric: listening on http://{settings.host}:{bound} as '{name}'; loading {path.name} "
          "(/health answers 503 until it is loaded)", file=sys.stderr, flush=True)
    try:
        loader.start()
        server.run(sockets=[sock])
        loader.join()  # a stop while loading waits for the load (llama.cpp's cannot be cut), then frees it
        if failed:
            raise failed[0]
    finally:
        if replica.app is not None:  # set after uvicorn's shutdown (a stop while loading): stop its thread here
            replica.app.state.scheduler.shutdown(settings.shutdown_timeout)
        for engine in engines:
            engine.close()
    print("sentiric: stopped", file=sys.stderr)
