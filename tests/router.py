"""The LiteLLM proxy from PyPI in front of `sentiric serve` replicas: shared by test_proxy.py and bench/fleet_bench.py.

The proxy lives in its own venv (`make litellm`: .venv-litellm), as a router people operate beside the replicas:
its pins (uvicorn, rich, fastapi) are not sentiric's. SENTIRIC_LITELLM names another `litellm` executable. The
config is the one docs/scale.md recommends, read from it, so the documented config is the tested one.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml
from waits import WAIT

ROOT = Path(__file__).resolve().parent.parent
LITELLM = Path(os.environ.get("SENTIRIC_LITELLM", ROOT / ".venv-litellm" / "bin" / "litellm"))
KEY = "sk-sentiric-test"


def documented() -> dict:
    """The LiteLLM config in docs/scale.md (the ```yaml block after `<!-- litellm.yaml -->`)."""
    text = (ROOT / "docs" / "scale.md").read_text()
    block = re.search(r"<!-- litellm\.yaml -->\s*```yaml\n(.*?)```", text, re.S)
    assert block, "docs/scale.md has no <!-- litellm.yaml --> block"
    return yaml.safe_load(block.group(1))


def config(urls: list[str], model: str = "sentiric", tuned: bool = True) -> dict:
    """The documented config (tuned) or LiteLLM's defaults, with one deployment per replica URL."""
    base = documented()
    entry = base["model_list"][0]
    deployments = [{**entry, "litellm_params": {**entry["litellm_params"], "model": f"openai/{model}",
                                                "api_base": f"{u}/v1"}} for u in urls]
    for d in deployments:
        d["model_name"] = model
    if not tuned:
        return {"model_list": [{"model_name": model, "litellm_params": {"model": f"openai/{model}", "api_base": f"{u}/v1",
                                                                        "api_key": "none"}} for u in urls],
                "general_settings": {"master_key": KEY}}
    return {**base, "model_list": deployments, "general_settings": {**base.get("general_settings", {}),
                                                                    "master_key": KEY}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def proxy(cfg: dict):
    """A LiteLLM proxy on a free loopback port with `cfg`, no database; yields its URL."""
    if not LITELLM.exists():
        raise RuntimeError(f"no LiteLLM proxy at {LITELLM}: run `make litellm` (or set SENTIRIC_LITELLM)")
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "litellm.yaml"
        path.write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM", "DATABASE_URL"))}
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no fetch of the model price list: no network here
        log = open(Path(tmp) / "proxy.log", "w")
        proc = subprocess.Popen([str(LITELLM), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + WAIT
            while True:
                if proc.poll() is not None:
                    log.flush()
                    raise RuntimeError(f"the LiteLLM proxy exited: {(Path(tmp) / 'proxy.log').read_text()[-3000:]}")
                try:
                    if httpx.get(f"{url}/health/liveliness", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the LiteLLM proxy did not start")
                time.sleep(0.25)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
