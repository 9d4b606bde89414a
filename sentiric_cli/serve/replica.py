"""What a router sees of this server before the model is loaded: the port answers from the first moment.

uvicorn serves a Replica at once; the model loads beside it (serve/command.py). Until the real app is set:
- /livez answers 200: the process is up and answering (liveness; a router or kubelet restarts it on no answer);
- /health and /readyz answer 503 with llama-server's body for a loading model, so a router (LiteLLM's health
  checks, nginx's passive checks, Kubernetes' readiness) keeps traffic away;
- everything else answers 503 too, never a refused connection a client would count as the server being gone.
Once loaded, every request goes to the app; its /health turns 503 again while it drains (app.py).
"""

from __future__ import annotations

from typing import Any

from sentiric_cli.serve.errors import error

LIVE = {"/livez", "/v1/livez"}


class Replica:
    def __init__(self) -> None:
        self.app: Any = None  # the real app, once the model is loaded

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if self.app is not None:
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return None
        path = scope["path"]
        if path in LIVE:
            from fastapi.responses import JSONResponse

            return await JSONResponse({"status": "ok", "ready": False})(scope, receive, send)
        return await error(503, "Loading model", "unavailable_error", path=path,
                           headers={"Retry-After": "1"})(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        """Startup needs nothing; at shutdown the app's own handlers run (the scheduler stops) if it was set."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.app is not None:
                    await self.app.router.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
