"""``GET /health``: is the app up, and how busy is it (JSON, answered at once).

The body is ``{"status": "ok", ...}`` with :meth:`playground.services.Services.load_summary`'s numbers:
uptime, generation slots busy and waiting, the sequences in engines' shared decode loops, the loaded models,
and ``generations: {running, waiting}`` adding both. The route does no model work and waits for no
generation: it runs on the server's event loop (no worker thread needed, so it answers while every
handler thread is busy) and only reads counters.

It is a route of Gradio's own FastAPI app, given to ``Blocks.launch`` through ``app_kwargs`` (FastAPI's
``routes``), so it exists from the moment the server listens, ahead of Gradio's routes, for ``python app.py``,
a share link and a Space alike. With Gradio's Node server in front (``GRADIO_SSR_MODE=true``) only Gradio's
own paths reach Python, so there it is not served.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from playground.services import Services

HEALTH_PATH = "/health"


def health_body(services: Services) -> dict:
    return {"status": "ok", **services.load_summary().as_dict()}


def health_route(services: Services) -> APIRoute:
    """The ``GET /health`` route over ``services``."""

    async def health() -> JSONResponse:
        return JSONResponse(health_body(services), headers={"Cache-Control": "no-store"})

    return APIRoute(HEALTH_PATH, health, methods=["GET"], name="health", include_in_schema=False)
