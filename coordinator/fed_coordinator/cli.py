"""`fedctl`: the operator's command line. Readable tables by default, `--json` for scripts.

It reads the coordinator's state (SQLite) directly and hands actions (run-now, promote,
rollback, deploy) to the running service through a command queue in the same database,
then waits for the service's answer. Run it on the coordinator host as root or the
service user.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_CONFIG = os.environ.get("FED_COORDINATOR_CONFIG", "/etc/fed-coordinator/coordinator.yaml")


def _state_dir(args) -> Path:
    if args.state_dir:
        return Path(args.state_dir)
    from .config import ConfigError, load_config

    try:
        return Path(load_config(args.config).service.state_dir)
    except ConfigError as exc:
        raise SystemExit(f"fedctl: {exc} (or pass --state-dir)")


def _state(args):
    from .state import State

    db = _state_dir(args) / "coordinator.db"
    if not db.exists():
        raise SystemExit(f"fedctl: no coordinator state at {db}")
    return State(db)


def _registry(args):
    from .registry import ModelRegistry

    return ModelRegistry(_state_dir(args) / "models")


def _table(rows: list[dict], columns: list[str]) -> str:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line([c.upper() for c in columns])] + [line(r) for r in cells])


def _when(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _out(args, data, rows: list[dict], columns: list[str]) -> int:
    print(json.dumps(data, default=str) if args.json else _table(rows, columns))
    return 0


def cmd_status(args) -> int:
    st = _state(args)
    from .fleet import fleet_view

    fleet = fleet_view(st, 180)
    running = st.running_campaign()
    last = next((c for c in st.campaigns(20) if c["status"] != "running"), None)
    data = {"agents_reporting": sum(agent.online for agent in fleet), "agents_registered": len(fleet),
            "running_campaign": running and running["id"], "champion": st.champion(),
            "last_campaign": last and {k: last[k] for k in ("id", "status", "reason")},
            "pending_deploys": len(st.deployments("pending"))}
    if args.json:
        print(json.dumps(data))
    else:
        for key, value in data.items():
            print(f"{key.replace('_', ' ')}: {value if value is not None else '-'}")
    return 0


def cmd_fleet(args) -> int:
    from .fleet import fleet_view

    fleet = fleet_view(_state(args), 180)
    rows = [{**agent.to_json(), "state": "online" if agent.online else "offline",
             "images": agent.image_total, "last_seen_s": agent.heartbeat_age_seconds} for agent in fleet]
    return _out(args, {"agents": [agent.to_json() for agent in fleet]}, rows, ["name", "state", "last_seen_s", "supernode_state",
                                               "images", "version", "address"])


def cmd_campaigns(args) -> int:
    st = _state(args)
    if args.follow:
        return _follow(st, args)
    rows = st.campaigns(args.limit)
    for r in rows:
        r["started"] = _when(r["started_at"])
        r["rounds_done"] = len(r["rounds"])
        r["accuracy"] = r["rounds"][-1]["server_accuracy"] if r["rounds"] else None
    return _out(args, {"campaigns": rows}, rows,
                ["id", "trigger", "status", "started", "rounds_done", "accuracy", "model_version", "reason"])


def _follow(st, args) -> int:
    """Print each round of the running (or next) campaign as it completes."""
    seen: set[tuple[str, int]] = set()
    cid = None
    while True:
        running = st.running_campaign()
        if cid is None and running:
            cid = running["id"]
            print(f"following campaign {cid}", flush=True)
        if cid:
            camp = next(c for c in st.campaigns(200) if c["id"] == cid)
            for r in camp["rounds"]:
                if (cid, r["round"]) not in seen:
                    seen.add((cid, r["round"]))
                    print(json.dumps(r) if args.json else
                          f"round {r['round']}: server accuracy {r['server_accuracy']:.3f} "
                          f"({r['participants']} agents)", flush=True)
            if camp["status"] != "running":
                print(f"campaign {cid} {camp['status']}" + (f": {camp['reason']}" if camp["reason"] else ""))
                return 0 if camp["status"] == "completed" else 1
        time.sleep(1)


def cmd_models(args) -> int:
    st, reg = _state(args), _registry(args)
    status = {m["version"]: m for m in st.models()}
    rows = []
    for v in reversed(reg.versions()):
        meta = reg.metadata(v)
        m = status.get(v, {})
        rows.append({"version": v, "created": meta["created"], "campaign": meta.get("campaign_id"),
                     "server_accuracy": meta.get("server_accuracy"), "status": m.get("status", "-"),
                     "score": m.get("score"), "reason": m.get("reason"),
                     "champion": v == st.champion(), "path": str(reg.path(v))})
    return _out(args, {"models": rows, "champion": st.champion()}, rows,
                ["version", "created", "status", "score", "campaign", "reason"])


def cmd_deploys(args) -> int:
    rows = _state(args).deployments()
    for r in rows:
        r["updated"] = _when(r["updated_at"])
        r["next_attempt"] = _when(r["next_attempt_at"]) if r["status"] == "pending" else None
    return _out(args, {"deployments": rows}, rows,
                ["id", "model_version", "status", "attempts", "next_attempt", "updated", "last_error"])


def _command(args, kind: str, arg: str | None = None) -> int:
    st = _state(args)
    cmd_id = st.command_add(kind, arg)
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        cmd = st.command(cmd_id)
        if cmd["done_at"] is not None:
            print(json.dumps({"ok": bool(cmd["ok"]), "result": cmd["result"]}) if args.json else cmd["result"])
            return 0 if cmd["ok"] else 1
        time.sleep(0.3)
    print(f"fedctl: no answer from fed-coordinator within {args.wait:.0f}s (is it running?)",
          file=sys.stderr)
    return 1


def cmd_agent_add(args) -> int:
    st = _state(args)
    known = {a["name"] for a in st.agents()}
    if args.if_missing and args.name in known and args.token_file and Path(args.token_file).is_file():
        print(f"agent {args.name}: already registered, token file kept")
        return 0
    token = st.add_agent(args.name)
    if args.token_file:
        path = Path(args.token_file)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        os.chmod(path, 0o600)
        print(f"agent {args.name}: token written to {path} (mode 0600)")
    else:
        print(token)
    return 0


def cmd_node_register(args) -> int:
    """`flwr supernode register` against the local SuperLink; a key already there is fine."""
    import subprocess

    from .flower import BIN_DIR, flower_env

    home = _state_dir(args) / "flwr-cli"
    if not (home / "config.toml").is_file():
        raise SystemExit(f"fedctl: {home}/config.toml missing (start fed-coordinator first)")
    proc = subprocess.run([str(BIN_DIR / "flwr"), "supernode", "register", args.public_key, "fleet",
                           "--name", args.name, "--format", "json"], capture_output=True, text=True,
                          env=flower_env(home), timeout=60, cwd=home)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = {"success": False, "error-message": (proc.stdout + proc.stderr)[-500:]}
    message = str(data.get("error-message", ""))
    if data.get("success") or "already" in message.lower():
        print(f"node {args.name}: registered" + (" (already)" if not data.get("success") else ""))
        return 0
    print(f"fedctl: registering {args.name} failed: {message}", file=sys.stderr)
    return 1


def cmd_predict(args) -> int:
    import numpy as np

    from fedapp.images import load_image
    from fedapp.tflite import load_interpreter

    latest = _registry(args).latest()
    if latest is None:
        print(f"no registered model under {_state_dir(args) / 'models'}", file=sys.stderr)
        return 1
    meta = json.loads((latest / "metadata.json").read_text())
    interp = load_interpreter(latest / "model_float32.tflite")
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    status, rows = 0, []
    for image in args.images:
        try:
            pixels = load_image(image)
        except (OSError, ValueError) as exc:
            print(f"{image}: error: {exc}", file=sys.stderr)
            status = 1
            continue
        interp.set_tensor(inp["index"], pixels[None])
        interp.invoke()
        probs = interp.get_tensor(out["index"])[0]
        best = int(np.argmax(probs))
        rows.append({"image": image, "label": meta["labels"][best], "score": float(probs[best])})
    if args.json:
        print(json.dumps({"model_version": meta["version"], "predictions": rows}))
    else:
        for row in rows:
            print(f"{row['image']}\t{row['label']}\t{row['score']:.3f}")
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fedctl", description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="coordinator config (for its state_dir)")
    p.add_argument("--state-dir", default=os.environ.get("FED_STATE_DIR"), help="overrides the config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the service's answer")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="one-screen summary").set_defaults(func=cmd_status)
    sub.add_parser("fleet", help="agents and their heartbeats").set_defaults(func=cmd_fleet)
    c = sub.add_parser("campaigns", help="recent campaigns")
    c.add_argument("--follow", action="store_true", help="print rounds of the running campaign as they finish")
    c.add_argument("--limit", type=int, default=20)
    c.set_defaults(func=cmd_campaigns)
    sub.add_parser("models", help="registered models").set_defaults(func=cmd_models)
    sub.add_parser("deploys", help="Edge Impulse deployments").set_defaults(func=cmd_deploys)
    sub.add_parser("run-now", help="start a campaign now").set_defaults(func=lambda a: _command(a, "run-now"))
    for name, text in (("promote", "make VERSION the champion and deploy it"),
                       ("deploy", "deploy VERSION again")):
        s = sub.add_parser(name, help=text)
        s.add_argument("version", type=int)
        s.set_defaults(func=lambda a, n=name: _command(a, n, str(a.version)))
    sub.add_parser("rollback", help="previous champion back").set_defaults(func=lambda a: _command(a, "rollback"))
    s = sub.add_parser("agent-add", help="register an agent and issue its heartbeat token")
    s.add_argument("name")
    s.add_argument("--token-file", help="write the token here (mode 0600) instead of printing it")
    s.set_defaults(func=cmd_agent_add)
    s.add_argument("--if-missing", action="store_true",
                   help="do nothing when the agent and its token file already exist (idempotent)")
    s = sub.add_parser("node-register", help="register a Pi's SuperNode public key (node authentication)")
    s.add_argument("name")
    s.add_argument("public_key")
    s.set_defaults(func=cmd_node_register)
    s = sub.add_parser("predict", help="classify images with the newest registered model")
    s.add_argument("images", nargs="+")
    s.set_defaults(func=cmd_predict)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
