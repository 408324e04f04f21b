"""The optional Linux runner (`.eim`) kept next to a registered model, when the project offers it.

Why: Edge Impulse stays the deploy target for other devices, and a site may prefer Edge
Impulse's own runner on a Pi; the Pis' default runtime stays the registry's TFLite model. So
the runner is an extra of a deploy, never a condition of it:

- the project's deployment targets (`ei.model.list_deployment_targets()`) lack it: the note
  "<target> not offered by the project" is recorded and the deploy goes on;
- its build, download or write fails (transport faults are first retried within the deploy
  like any step): the reason is recorded as a note, the deploy still succeeds, and it is not
  retried later (the next champion's deploy, or `fedctl deploy VERSION`, builds it again);
- built: `<registry>/vNNNN/edge-impulse/<target>.eim`, mode 0755, with its size, SHA-256 and
  deploymentVersion in the deployment's result.

The download is bounded (`max_bytes`, checked before it is all read) and the file is written
with atomic_write only once complete, so a failed, cut or oversized download leaves the old
file or none, never part of one.
"""

from __future__ import annotations

from pathlib import Path

from fed_common.files import atomic_write, sha256_bytes

from fed_coordinator.deploy.ei_http import redact

__all__ = ["eim_path", "failed", "not_offered", "store"]


def eim_path(out_dir: Path, target: str) -> Path:
    return Path(out_dir) / "edge-impulse" / f"{target}.eim"


def not_offered(target: str) -> dict:
    return {"target": target, "status": "not_offered",
            "note": f"{target} not offered by the project"}


def failed(target: str, reason: str) -> dict:
    return {"target": target, "status": "failed", "note": f"{target} not built: {reason}"}


def store(out_dir: Path, staged: tuple, secret: str, log) -> dict:
    """Write the built runner (target, name, data, version) atomically next to the model.

    Its record for the deployment's result; a write that fails (a full disk) is a note."""
    target, _name, data, version = staged
    path = eim_path(out_dir, target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, 0o755)  # a Pi must be able to execute it
    except OSError as exc:
        reason = f"cannot store {path}: {redact(str(exc), secret)}"
        log.warning("ei_eim_failed", target=target, error=reason)
        return failed(target, reason)
    record = {"target": target, "status": "stored", "path": str(path), "bytes": len(data),
              "sha256": sha256_bytes(data), "deployment_version": version}
    log.info("ei_eim_stored", **record)
    return record
