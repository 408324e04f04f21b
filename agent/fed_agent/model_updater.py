"""Fetch and switch to the model the coordinator wants this Pi to run, on its own thread.

The heartbeat reply names the desired version (`desired_model`); when it differs from the
one running, this thread downloads the signed manifest and the file from the fleet API
(with the agent's token), and hands them to the ModelStore, which verifies, self-tests and
switches. It never switches while a training message is being served (a `flwr-clientapp`
child of the SuperNode is alive): the update waits for it. A version the store refused is
not fetched again until the coordinator wants another; a download that fails is retried
with backoff. Nothing here can stop the agent: every failure is a state and a reason in the
heartbeat (`running_model`).
"""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.request
from typing import Callable, Optional

from fed_common.heartbeat import RunningModel
from fed_common.manifest import MAX_MODEL_BYTES, ManifestRejected

from .classifier import RunningClassifier
from .model_store import ModelStore, models_root
from .self_test import SelfTest


class ModelUpdater(threading.Thread):
    def __init__(self, store: ModelStore, api_base: str, token: Callable[[], str], *, ssl_context=None,
                 timeout: float = 60.0, busy: Callable[[], bool] = lambda: False, log, retry_max: float = 300.0) -> None:
        super().__init__(name="model-updater", daemon=True)
        self.store, self.api_base, self.token = store, api_base.rstrip("/"), token
        self.ssl_context, self.timeout, self.busy, self.log = ssl_context, timeout, busy, log
        self.retry_max = retry_max
        self.desired: Optional[int] = None
        self.refused: dict[int, str] = {}
        self.error: Optional[str] = None
        self.wake, self.stop_event = threading.Event(), threading.Event()

    def want(self, version: Optional[int]) -> None:
        """What the last heartbeat reply said (None: the coordinator has nothing for us)."""
        if version != self.desired:
            self.desired = version
            self.wake.set()

    def status(self) -> RunningModel:
        running = self.store.running()
        tested = self.store.self_tested() if running else None  # read from disk: a restart keeps it
        base = {"version": running.version if running else None,
                "sha256": running.file.sha256 if running else None, "desired_version": self.desired,
                "self_test_accuracy": tested.accuracy if tested else None,
                "self_test_images": tested.images if tested else 0}
        if self.desired is not None and self.desired in self.refused:
            return RunningModel(**base, state="failed", reason=self.refused[self.desired][:300])
        if self.desired is not None and (running is None or running.version != self.desired):
            return RunningModel(**base, state="updating", reason=(self.error or "")[:300] or None)
        return RunningModel(**base, state="ok" if running else "none")

    def run(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            delay = min(self.retry_max, 5.0 * 2 ** failures) if failures else 5.0
            self.wake.wait(delay)
            self.wake.clear()
            try:
                failures = 0 if self.step() else failures
            except Exception as exc:  # noqa: BLE001 - the thread must live; the reason is reported
                failures += 1
                self.error = f"{type(exc).__name__}: {exc}"
                self.log.warning("model_update_failed", desired=self.desired, error=self.error[:300],
                                 retry_in=min(self.retry_max, 5.0 * 2 ** failures))

    def step(self) -> bool:
        """One attempt; True when there is nothing (more) to do for now."""
        desired, running = self.desired, self.store.running()
        if desired is None or desired in self.refused or (running and running.version == desired):
            return True
        if self.busy():
            self.log.info("model_update_waits_for_training", desired=desired)
            return True
        if self.store.installed(desired) is not None:  # a rollback: the version is still on disk
            self.store.switch_to(desired)
            self.error = None
            self.log.info("model_switched", version=desired, source="kept on disk")
            return True
        body = self._get("/api/v1/model/manifest", 256 * 1024)
        try:
            manifest = self.store.verify(body)
            data = self._get(f"/api/v1/model/file/{manifest.version}", MAX_MODEL_BYTES)
            if self.busy():  # a train message arrived while we downloaded: switch later
                return True
            self.store.install(body, data)
        except ManifestRejected as exc:
            self.refused[desired] = str(exc)
            self.log.error("model_refused", desired=desired, reason=str(exc))
            return True
        self.error = None
        self.log.info("model_switched", version=manifest.version, sha256=manifest.file.sha256)
        return True

    def _get(self, path: str, limit: int) -> bytes:
        req = urllib.request.Request(self.api_base + path, headers={"Authorization": f"Bearer {self.token()}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl_context) as resp:
                data = resp.read(limit + 1)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"HTTP {exc.code} for {path}: {exc.read(300).decode(errors='replace')}") from None
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
            raise RuntimeError(f"cannot fetch {path}: {getattr(exc, 'reason', exc)}") from None
        if len(data) > limit:
            raise RuntimeError(f"{path} is larger than {limit} bytes")
        return data


def model_updater(cfg, heartbeat, supervisor, log, running: Optional[RunningClassifier] = None
                  ) -> Optional[ModelUpdater]:
    """The updater for this agent's config (None when `model.public_key_file` is unset). Each
    new model is self-tested on the Pi's own test images against `running` (the daemon's
    running model, shared so it is loaded once)."""
    key_file = cfg.model.public_key_file
    if key_file is None:
        return None
    from urllib.parse import urlsplit

    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        public_key = load_pem_public_key(key_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"fed-agent: model.public_key_file {key_file}: {exc}") from None
    url = urlsplit(cfg.coordinator.heartbeat_url)
    root = models_root(cfg.layout.state_dir)
    self_test = SelfTest(cfg.layout.data_dir, running or RunningClassifier(root), cfg.model.self_test_margin,
                         log=log)
    store = ModelStore(root, public_key, self_test=self_test)
    return ModelUpdater(store, f"{url.scheme}://{url.netloc}", heartbeat.read_token,
                        ssl_context=heartbeat.ssl_context, timeout=cfg.model.download_timeout,
                        busy=supervisor.serving, log=log)
