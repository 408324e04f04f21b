"""GET /api/v1/model/manifest and /api/v1/model/file/{version}: the champion for the Pis.

Both need the agent's own bearer token (as the heartbeat does) and serve only the version
the channel says that agent should run, so a token cannot be used to pull arbitrary models.
The manifest is signed (models/manifest.py); the agent checks it, then the file's size and
SHA-256, before anything is used.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from fed_coordinator.api.errors import error_response
from fed_coordinator.models.channel import ModelChannel

Authenticate = Callable[[Request], Awaitable["str | JSONResponse"]]


def add_model_routes(app: FastAPI, channel: ModelChannel, authenticate: Authenticate) -> None:
    @app.get("/api/v1/model/manifest")
    async def manifest(request: Request):
        agent = await authenticate(request)
        if isinstance(agent, JSONResponse):
            return agent
        version = channel.desired(agent)
        if version is None:
            return error_response(404, "no model to run yet (no champion)")
        return Response(channel.manifest(version), media_type="application/json")

    @app.get("/api/v1/model/file/{version}")
    async def model_file(version: int, request: Request):
        agent = await authenticate(request)
        if isinstance(agent, JSONResponse):
            return agent
        if version != channel.desired(agent):
            return error_response(404, f"v{version} is not the model this agent should run")
        return FileResponse(channel.file(version), media_type="application/octet-stream")
