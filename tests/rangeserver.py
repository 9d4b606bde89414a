"""A real HTTP server on loopback serving files with range requests, counting what it sends.

Routes, over the files of one folder:
  /files/NAME                 HEAD and GET, Range honoured (206), ETag from the file's size and mtime
  /norange/NAME               GET ignores Range: 200 and the whole file (the client must not read it)
  /loop/NAME                  302 to itself
  /slow/NAME                  answers after `slow_s` seconds
  /nohead/NAME                HEAD is a 405; GET as /files/
  /ORG/REPO/resolve/REV/NAME  Hugging Face's shape: needs `Bearer <token>` when `token` is set, then 302 to
                              /files/NAME as the Hub redirects to its CDN (the token must not follow)
Anything else is a 404.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
import time
from pathlib import Path


class RangeServer:
    def __init__(self, root: Path, token: str | None = None, slow_s: float = 3.0) -> None:
        self.root, self.token, self.slow_s = Path(root), token, slow_s
        self.sent = 0  # body bytes written
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers)
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                if self.path.startswith("/nohead/"):  # a server that answers no HEAD
                    return server._empty(self, 405)
                server._handle(self, head=True)

            def do_GET(self) -> None:
                server._handle(self, head=False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, h, head: bool) -> None:
        with self.lock:
            self.requests.append(("HEAD" if head else "GET", h.path, dict(h.headers)))
        path = h.path.split("?")[0]
        hf = re.fullmatch(r"/[^/]+/[^/]+/resolve/[^/]+/(.+)", path)
        if hf and not path.startswith(("/files/", "/norange/", "/loop/", "/slow/", "/nohead/")):
            if self.token and h.headers.get("Authorization") != f"Bearer {self.token}":
                return self._empty(h, 401)
            return self._empty(h, 302, {"Location": f"/files/{hf[1]}"})
        route, _, name = path.lstrip("/").partition("/")
        if route == "loop":
            return self._empty(h, 302, {"Location": path})
        file = self.root / name
        if route not in ("files", "norange", "slow", "nohead") or not name or not file.is_file():
            return self._empty(h, 404)
        if route == "slow":
            time.sleep(self.slow_s)
        st = file.stat()
        size = st.st_size
        etag = f'"{size:x}-{int(st.st_mtime_ns):x}"'
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", h.headers.get("Range", ""))
        if route == "norange" or head or not m:
            start, end, code = 0, size - 1, 200
        else:
            start, end, code = int(m[1]), min(int(m[2] or size - 1), size - 1), 206
        h.send_response(code)
        h.send_header("Content-Length", str(end - start + 1))
        h.send_header("ETag", etag)
        h.send_header("Accept-Ranges", "none" if route == "norange" else "bytes")
        if code == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if head:
            return
        with open(file, "rb") as f:
            f.seek(start)
            left = end - start + 1
            try:
                while left > 0:
                    chunk = f.read(min(left, 1 << 16))
                    h.wfile.write(chunk)
                    with self.lock:
                        self.sent += len(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: as it should for /norange
                h.close_connection = True

    def _empty(self, h, code: int, headers: dict | None = None) -> None:
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", "0")
        h.end_headers()


def sparse_copy(header_only: Path, target: Path) -> Path:
    """A header-only GGUF made as large as its tensors say (a hole: no disk used): a multi-GB file to serve."""
    from sentiric_cli.gguf.header import read_header

    h = read_header(header_only)
    with open(header_only, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read(h.data_offset))
        dst.truncate(h.data_offset + h.data_bytes_needed)
    os.utime(target)
    return target
