"""Fleet API and status page (FastAPI; uvicorn comes with Flower).

POST /api/v1/heartbeat is the only route agents use (and the only one the reverse proxy
should expose to them besides Flower's /v1/fleet/). It needs the agent's own bearer token;
the body is bounded and must be a JSON object naming that same agent.
"""

from __future__ import annotations

import json
import time

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from .state import State
from .status_page import render_status_page


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def fleet_view(state: State, online_after: float, now: float | None = None) -> list[dict]:
    now = now or time.time()
    rows = []
    for a in state.agents():
        payload = a["last_payload"] or {}
        age = None if a["last_heartbeat"] is None else round(now - a["last_heartbeat"], 1)
        rows.append({
            "name": a["name"], "online": age is not None and age <= online_after,
            "heartbeat_age_seconds": age, "address": a["address"],
            "supernode_state": (payload.get("supernode") or {}).get("state"),
            "node_id": (payload.get("supernode") or {}).get("node_id"),
            "version": payload.get("version"),
            "last_training": payload.get("last_training"),
            "images": payload.get("images"),
            "disk_free_bytes": payload.get("disk_free_bytes"),
            "cpu_temperature_c": payload.get("cpu_temperature_c"),
        })
    return rows


def create_app(state: State, *, max_body: int, online_after: float, log, metrics_text) -> FastAPI:
    app = FastAPI(title="fed-coordinator fleet API", docs_url=None, redoc_url=None)

    @app.post("/api/v1/heartbeat")
    async def heartbeat(request: Request):
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            return _error(401, "missing bearer token")
        agent = state.agent_for_token(auth[7:].strip())
        if agent is None:
            log.warning("heartbeat_rejected", reason="unknown token", client=request.client.host)
            return _error(401, "unknown agent token")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return _error(413, f"heartbeat larger than {max_body} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                return _error(413, f"heartbeat larger than {max_body} bytes")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return _error(400, f"body is not JSON: {exc}")
        if not isinstance(payload, dict):
            return _error(400, "body must be a JSON object")
        if payload.get("agent") != agent:
            return _error(403, f"token belongs to agent {agent!r}, body says {payload.get('agent')!r}")
        state.heartbeat(agent, payload, request.client.host if request.client else "")
        return {"ok": True, "agent": agent}

    @app.get("/api/v1/fleet")
    def fleet():
        return {"agents": fleet_view(state, online_after)}

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
        return render_status_page(fleet_view(state, online_after), state.campaigns(10),
                                  state.models(), state.champion())

    return app
