"""Fleet API and status page (FastAPI; uvicorn comes with Flower).

POST /api/v1/heartbeat is the only route agents use (and the only one the reverse proxy
should expose to them besides Flower's /v1/fleet/). It needs the agent's own bearer token;
the body is bounded, and it is validated against `fed_common.heartbeat.Heartbeat` straight
from the bytes (pydantic's JSON parser refuses NaN, Infinity and deep nesting) before
anything is stored: a bad one gets 422 with one "At 'field': ..." line per problem. It must
name the agent the token belongs to (403 otherwise).
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fed_common.config import format_validation_error
from fed_common.heartbeat import Heartbeat
from pydantic import ValidationError

from fed_coordinator.api.errors import error_response
from fed_coordinator.api.field_history import record_statements
from fed_coordinator.api.fleet import fleet_view
from fed_coordinator.config import MonitoringSection
from fed_coordinator.state import State
from fed_coordinator.api.status_page import PAGE_HEADERS, status_page_html
from fed_coordinator.api.model_routes import add_model_routes
from fed_coordinator.api.throttle import LogThrottle, client_address
from fed_coordinator.models.channel import ModelChannel


async def _bounded_body(request: Request, max_body: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed max_body (never buffered)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            return None
    return body


def _parse_heartbeat(body: bytes, agent: str, log) -> Heartbeat | JSONResponse:
    """The validated Heartbeat, or the 400/422 answer naming what is wrong."""
    try:
        return Heartbeat.model_validate_json(body)
    except ValidationError as exc:
        syntax = [err["msg"] for err in exc.errors() if err["type"] == "json_invalid"]
        if syntax:  # not JSON at all, or nested deeper than the parser allows
            return error_response(400, f"body is not valid JSON: {syntax[0]}")
        problems = format_validation_error(exc)
        log.warning("heartbeat_rejected", agent=agent, reason="invalid", problems=problems[:10])
        return JSONResponse({"error": "invalid heartbeat", "problems": problems}, status_code=422)


def token_authenticator(state: State, log):
    """`await authenticate(request)`: the agent the bearer token belongs to, or the 401."""
    unknown_tokens = LogThrottle()

    async def authenticate(request: Request) -> str | JSONResponse:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            return error_response(401, "missing bearer token")
        agent = state.agent_for_token(auth[7:].strip())
        if agent is None:
            client = client_address(request)
            held_back = unknown_tokens.allow(client)
            if held_back is not None:
                log.warning("request_rejected", path=request.url.path, reason="unknown token",
                            client=client, held_back_since_last=held_back)
            return error_response(401, "unknown agent token")
        return agent

    return authenticate


def create_app(state: State, *, max_body: int, online_after: float, log, metrics_text,
               channel: ModelChannel | None = None, monitoring: MonitoringSection | None = None) -> FastAPI:
    app = FastAPI(title="fed-coordinator fleet API", docs_url=None, redoc_url=None)
    monitoring = monitoring or MonitoringSection()
    authenticate = token_authenticator(state, log)
    if channel is not None:
        add_model_routes(app, channel, authenticate)

    @app.post("/api/v1/heartbeat")
    async def heartbeat(request: Request):
        agent = await authenticate(request)
        if isinstance(agent, JSONResponse):
            return agent
        body = await _bounded_body(request, max_body)
        if body is None:
            return error_response(413, f"heartbeat larger than {max_body} bytes")
        beat = _parse_heartbeat(body, agent, log)
        if isinstance(beat, JSONResponse):
            return beat
        if beat.agent != agent:
            return error_response(403, f"token belongs to agent {agent!r}, body says {beat.agent!r}")
        # The field summary is a delta the agent sends again unless this is taken: its history
        # row commits with the heartbeat or not at all (api.field_history).
        state.heartbeat(agent, beat.model_dump_json(), request.client.host if request.client else "",
                        also=record_statements(agent, beat.field, time.time(), monitoring))
        # The desired model rides on the reply: agents need no polling to learn of a new one.
        return {"ok": True, "agent": agent, "desired_model": channel.desired(agent) if channel else None}

    @app.get("/api/v1/fleet")
    def fleet():
        return {"agents": [row.to_json() for row in fleet_view(state, online_after, monitoring=monitoring)]}

    @app.get("/api/v1/campaigns")
    def campaigns(limit: int = 50):
        return {"campaigns": state.campaigns(limit)}

    @app.get("/api/v1/models")
    def models():
        return {"models": state.models(), "champion": state.champion()}

    @app.get("/api/v1/deployments")
    def deployments():
        return {"deployments": state.deployments()}

    @app.get("/metrics")
    def metrics():
        return PlainTextResponse(metrics_text(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse)
    def status_page():
        return HTMLResponse(status_page_html(state, online_after, monitoring), headers=PAGE_HEADERS)

    return app
