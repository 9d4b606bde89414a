"""A real `sentiric serve` process on a free port, and the official openai client pointed at it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
from openai import OpenAI
from waits import WAIT


@contextmanager
def server(*args: str, env: dict | None = None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLM_LLAMA_SERVICE_")} | (env or {})
    proc = subprocess.Popen([sys.executable, "-m", "sentiric_cli", "serve", "--port", "0", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=environ, text=True)
    banner = ""
    try:
        while "plan on" not in banner:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError(f"server did not start: {banner}{proc.stderr.read()}")
            banner += line
        url = re.search(r"http://[\d.]+:\d+", banner).group(0)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield url, proc, banner
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()



def rss_mib(pid: int) -> float:
    """A process's resident memory (MiB), from /proc."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def client(url: str, key: str = "none") -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=WAIT)


def after_a_first_read(create, *args, **kw):
    """create(*args, **kw) answered from a prompt the server has just read, for answers that are compared.

    A prompt already read is reused: only its last token is read again, in a 1-row step whose kernels differ in the
    last bits from the whole prompt's, and on some CPUs that flips a near tie (issue 22: "Say hi." against "Say
    hello."). So a first request reads the prompt, its answer is not compared, and every compared one reuses it."""
    create(*args, **kw)
    return create(*args, **kw)
