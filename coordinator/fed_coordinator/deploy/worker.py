"""Deploys of champions to Edge Impulse: serialised, persistent, retried with backoff.

Uploads, settings and builds belong to the whole Edge Impulse project, so deploys run one at
a time on this worker. A deploy lives in SQLite: a failure that may pass (5xx, timeout, a
failed build) stays pending with a next-attempt time that survives restarts; one that won't
(bad API key, unknown target) is marked failed with its reason. The optional Linux runner
(`edge_impulse.eim_target`) never decides the outcome: its record, stored (path, bytes,
sha256) or a note, is the result's `eim` (deploy/eim.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fed_coordinator.models.registry import ModelRegistry
from fed_coordinator.state import State


class DeployWorker(threading.Thread):
    def __init__(self, state: State, registry: ModelRegistry, ei_cfg, log) -> None:
        super().__init__(name="deploy", daemon=True)
        self.state, self.registry, self.cfg, self.log = state, registry, ei_cfg, log
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self._said_not_configured = False
        self.busy = False

    def backoff(self, attempts: int) -> float:
        return min(self.cfg.retry_initial_seconds * 2 ** max(attempts - 1, 0), self.cfg.retry_max_seconds)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.process_due()
            self.wake.wait(5.0)
            self.wake.clear()

    def process_due(self) -> None:
        now = time.time()
        for dep in self.state.deployments("pending"):
            if self.stop_event.is_set():
                return
            if dep["next_attempt_at"] <= now:
                self.attempt(dep)

    def attempt(self, dep: dict) -> None:
        from fed_coordinator.deploy.edge_impulse import DeployError, EdgeImpulseDeployer, read_api_key

        log = self.log.bind(model_version=dep["model_version"], deployment=dep["id"])
        try:
            key = read_api_key(self.cfg.api_key_file)
        except DeployError as exc:
            self.state.deployment_update(dep["id"], status="failed", last_error=str(exc))
            log.error("deploy_failed", reason=str(exc))
            return
        if key is None:
            if not self._said_not_configured:
                self._said_not_configured = True
                log.warning("deploy_skipped", reason=f"no Edge Impulse API key file at "
                            f"{self.cfg.api_key_file}; deploys are skipped")
            self.state.deployment_update(dep["id"], status="skipped",
                                         last_error=f"no API key file {self.cfg.api_key_file}")
            return
        folder = self.registry.path(dep["model_version"])
        meta = self.registry.metadata(dep["model_version"])
        attempts = dep["attempts"] + 1
        self.state.deployment_update(dep["id"], status="running", attempts=attempts)
        self.busy = True
        try:
            deployer = EdgeImpulseDeployer(
                key, endpoint=self.cfg.endpoint, device=self.cfg.device, targets=self.cfg.targets,
                connect_timeout=self.cfg.connect_timeout, read_timeout=self.cfg.read_timeout,
                job_timeout=self.cfg.job_timeout, eim_target=self.cfg.eim_target,
                eim_max_bytes=self.cfg.eim_max_mb << 20, log=log)
            result = deployer.deploy(Path(folder) / "model_float32.tflite", meta["labels"], Path(folder))
        except DeployError as exc:
            if exc.retryable:
                wait = self.backoff(attempts)
                self.state.deployment_update(dep["id"], status="pending", last_error=str(exc),
                                             next_attempt_at=time.time() + wait)
                log.warning("deploy_retry_later", reason=str(exc), attempts=attempts, retry_in=wait)
            else:
                self.state.deployment_update(dep["id"], status="failed", last_error=str(exc))
                log.error("deploy_failed", reason=str(exc), attempts=attempts)
            return
        finally:
            self.busy = False
        self.state.deployment_update(dep["id"], status="succeeded", last_error="", result={
            "artifacts": result.artifacts, "deployment_versions": result.deployment_versions,
            "profile_path": result.profile_path, "eim": result.eim})
        log.info("deployed", artifacts=result.artifacts, versions=result.deployment_versions,
                 eim=result.eim)
