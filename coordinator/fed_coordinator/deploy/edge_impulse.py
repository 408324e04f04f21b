"""Deploy a registered model to Edge Impulse with the real `edgeimpulse` SDK, gaps covered.

One deploy: validate every target against `ei.model.list_deployment_targets()` before anything
is uploaded; profile for the device; per target `ei.model.deploy(...)`, then confirm the build
job it started is finished AND finishedSuccessful (the SDK does not) and download that exact
deploymentVersion (GET /api/{pid}/deployment/history/{v}/download) instead of the SDK's
"latest", which after a failed build is an older artifact. Nothing is stored until every target
built: then each artifact and profile.json is written atomically under out_dir/edge-impulse/.
With `eim_target` set, that Linux runner is built last when the project offers it and kept as
out_dir/edge-impulse/<target>.eim; its absence or failure is a note, never a failed deploy
(eim.py).

Bounds: every request has connect/read timeouts, urllib3's 10x retries are off, each step is
tried up to `max_attempts` times with exponential backoff for transport faults only (5xx,
429 on any method honouring a capped Retry-After, connection errors, timeouts); 401/403 and
bad input are final at once; a failed or timed-out build job is reported retryable (the
caller's queue retries later) without an immediate rebuild. Jobs wait at most `job_timeout`.
HTTP plumbing and its justification: ei_http.py. `import edgeimpulse` is slow (TensorFlow):
it happens only inside deploy().
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from fed_common.files import atomic_write

from fed_coordinator.deploy import eim
from fed_coordinator.deploy.ei_http import DEFAULT_ENDPOINT, DeployError, classify, redact, sdk_session

__all__ = ["DeployError", "DeployResult", "EdgeImpulseDeployer", "read_api_key"]

# The float32 model takes RGB pixels 0..255 (its Rescaling layer is inside): image input.
INPUT_SCALING = "0..255"
_TARGET_NAME = re.compile(r"[A-Za-z0-9][\w.+-]*")  # a file name too: <target>.eim


@dataclass
class DeployResult:
    artifacts: dict[str, str]  # target -> path of the stored artifact
    deployment_versions: dict[str, int]
    profile_path: str  # JSON of the profile summary
    profile_summary: dict
    eim: dict | None = None  # the optional runner: stored (path, bytes, sha256) or a note


def read_api_key(path: str | Path) -> str | None:
    """The key in `path`; None if there is no such file. It must be mode 0600 and not empty."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DeployError(f"cannot read the Edge Impulse API key file {p}: {exc.strerror}",
                          False) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise DeployError(f"Edge Impulse API key file {p} is not a regular file", False)
        if st.st_mode & 0o077:
            raise DeployError(f"Edge Impulse API key file {p} has mode "
                              f"{stat.S_IMODE(st.st_mode):04o}: group/others may read it; it must "
                              f"be 0600 (chmod 600 {p})", False)
        key = fh.read(4096).decode("utf-8", "replace").strip()
    if not key:
        raise DeployError(f"Edge Impulse API key file {p} is empty", False)
    return key


def _default_log():
    import structlog

    return structlog.get_logger().bind(component="edge_impulse")


def _safe_name(name: str | None, target: str) -> str:
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    if not base or base.startswith(".") or not re.fullmatch(r"[\w.+=-]+", base):
        return f"{target}.eim" if target.startswith("runner-") else f"{target}.zip"
    return base


class EdgeImpulseDeployer:
    def __init__(self, api_key: str, *, endpoint: str | None = None,
                 device: str = "raspberry-pi-4", targets: Sequence[str] = ("zip",),
                 connect_timeout: float = 10, read_timeout: float = 120,
                 job_timeout: float = 1800, max_attempts: int = 3, backoff: float = 2.0,
                 eim_target: str | None = None, eim_max_bytes: int = 512 << 20,
                 log=None) -> None:
        if not api_key or not api_key.strip():
            raise DeployError("no Edge Impulse API key", False)
        if not targets or isinstance(targets, str):
            raise DeployError("targets must be a non-empty list of deployment target names", False)
        if connect_timeout <= 0 or read_timeout <= 0 or job_timeout <= 0 or max_attempts < 1:
            raise DeployError("timeouts must be > 0 and max_attempts >= 1", False)
        if eim_max_bytes < 1 or (eim_target and not _TARGET_NAME.fullmatch(eim_target)):
            raise DeployError("eim_target must be a target name and eim_max_bytes >= 1", False)
        self._key = api_key.strip()
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.eim_target, self.eim_max_bytes = eim_target or None, int(eim_max_bytes)
        # the runner is optional: listed in targets too, it is still built once, as the extra
        self.device = device
        self.targets = [t for t in dict.fromkeys(targets) if t != self.eim_target]
        self.connect_timeout, self.read_timeout = float(connect_timeout), float(read_timeout)
        self.job_timeout, self.max_attempts = float(job_timeout), int(max_attempts)
        self.backoff = float(backoff)
        self.log = log if log is not None else _default_log()

    def __repr__(self) -> str:  # never the key
        return (f"EdgeImpulseDeployer(endpoint={self.endpoint!r}, targets={self.targets!r}, "
                f"eim_target={self.eim_target!r})")

    # -- one deploy ------------------------------------------------------------------------
    def deploy(self, model_path: Path, labels: list[str], out_dir: Path) -> DeployResult:
        model_path, out_dir = Path(model_path), Path(out_dir)
        if not model_path.is_file():
            raise DeployError(f"model file {model_path} does not exist", False)
        if not labels or not all(isinstance(x, str) and x for x in labels):
            raise DeployError("labels must be a non-empty list of names", False)
        try:
            import edgeimpulse as ei
        except ImportError as exc:
            raise DeployError(f"the edgeimpulse SDK is not installed: {exc}", False) from exc
        model = str(model_path)  # the SDK sends a str path as TFLite (a Path fails validation)
        with sdk_session(self._key, self.endpoint, self.connect_timeout, self.read_timeout) as s:
            valid = self._step("validate", ei.model.list_deployment_targets)
            unknown = [t for t in self.targets if t not in valid]
            if unknown:
                raise DeployError(f"unknown Edge Impulse deploy target(s) {unknown}; valid: "
                                  f"{sorted(valid)}", False)
            self.log.info("ei_validate", targets=self.targets, eim_target=self.eim_target,
                          endpoint=self.endpoint)

            prof = self._step("profile", lambda: ei.model.profile(
                model=model, device=self.device, timeout_sec=self.job_timeout))
            summary = self._summary(prof)
            f32 = summary.get("float32") or {}
            self.log.info("ei_profile", device=self.device,
                          latency_ms=f32.get("timePerInferenceMs"),
                          model_bytes=f32.get("tfliteFileSizeBytes"))

            labels = list(labels)
            staged = [self._fetch(s, ei, model, labels, target) for target in self.targets]
            eim_staged, eim_note = self._fetch_eim(s, ei, model, labels, valid)
        result = self._store(out_dir, staged, summary)
        result.eim = eim.store(out_dir, eim_staged, self._key, self.log) if eim_staged else eim_note
        return result

    def _fetch(self, s, ei, model: str, labels: list[str], target: str,
               max_bytes: int | None = None) -> tuple[str, str, bytes, int]:
        """Build one target and download that exact deploymentVersion: (target, name, data, v)."""
        from edgeimpulse.model.input_type import ImageInput
        from edgeimpulse.model.output_type import Classification

        def build():
            return self._build(s, ei, model, target, Classification(labels=labels),
                               ImageInput(scaling_range=INPUT_SCALING))

        job = self._step("build", build, target=target)
        self.log.info("ei_build", target=target, version=job.version, job=job.job_id)
        name, data = self._step("download", lambda: s.download_version(
            job.project_id, job.version, max_bytes=max_bytes), target=target)
        name = _safe_name(name, target)
        self.log.info("ei_download", target=target, version=job.version, file=name,
                      bytes=len(data))
        return target, name, data, job.version

    def _fetch_eim(self, s, ei, model: str, labels: list[str], valid) -> tuple:
        """(staged runner, None) if built; (None, note) if off (None), not offered or failed."""
        target = self.eim_target
        if target is None:
            return None, None
        if target not in valid:
            self.log.info("ei_eim_not_offered", target=target)
            return None, eim.not_offered(target)
        try:
            return self._fetch(s, ei, model, labels, target, max_bytes=self.eim_max_bytes), None
        except DeployError as exc:  # the runner is an extra: the deploy goes on without it
            self.log.warning("ei_eim_failed", target=target, error=str(exc))
            return None, eim.failed(target, str(exc))

    def _build(self, s, ei, model: str, target: str, output_type, input_type):
        """ei.model.deploy, then the build job it started must be finished and successful."""
        mark = len(s.builds)
        sdk_error = None
        try:
            ei.model.deploy(model=model, model_output_type=output_type, model_input_type=input_type,
                            deploy_model_type="float32", engine="tflite", deploy_target=target,
                            output_directory=None, timeout_sec=self.job_timeout)
        except Exception as exc:  # noqa: BLE001 - judged below, with the job's own status
            sdk_error = exc
        started = [b for b in s.builds[mark:] if b.target == target]
        if not started:
            if sdk_error is not None:
                raise sdk_error
            raise DeployError(f"the SDK started no build job for target {target}", False)
        job = started[-1]
        try:
            finished, ok = s.job_state(job)
        except Exception:  # noqa: BLE001 - the SDK's own error says more
            if sdk_error is not None:
                raise sdk_error from None
            raise
        if finished and ok:
            if sdk_error is not None:  # only its download of "latest" failed: we don't use it
                self.log.warning("ei_sdk_download_ignored", target=target, version=job.version,
                                 error=str(classify(sdk_error, self._key)))
            return job
        if finished:
            from edgeimpulse.exceptions import TimeoutException

            if isinstance(sdk_error, TimeoutException):  # over job_timeout, the SDK cancelled it
                raise sdk_error
            # a failed build; the SDK may have fetched an older "latest" or got a 404 for it
            raise DeployError(f"Edge Impulse build job {job.job_id} for target {target} failed "
                              f"(deploymentVersion {job.version})", True)
        if sdk_error is not None:
            raise sdk_error
        raise DeployError(f"Edge Impulse build job {job.job_id} for target {target} has not "
                          "finished", True)

    def _step(self, step: str, fn: Callable, target: str | None = None):
        """fn() with up to max_attempts tries; only transport faults are retried, with backoff."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except DeployError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified: nothing escapes raw
                err = classify(exc, self._key)
                if not err.retry_now or attempt >= self.max_attempts:
                    self.log.error("ei_step_failed", step=step, target=target, attempt=attempt,
                                   retryable=err.retryable, error=str(err))
                    raise DeployError(f"{step}: {err}", err.retryable, status=err.status,
                                      retry_after=err.retry_after) from None
                delay = self.backoff * 2 ** (attempt - 1)
                if err.retry_after is not None:
                    delay = max(delay, err.retry_after)
                self.log.warning("ei_retry", step=step, target=target, attempt=attempt,
                                 delay=round(delay, 2), error=str(err))
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _summary(self, prof) -> dict:
        doc = json.loads(json.dumps(prof.to_dict(), default=str))
        model = doc.get("model") or {}
        info = model.get("profileInfo") or {}
        return {"device": self.device, "specificDeviceSelected": doc.get("specificDeviceSelected"),
                "availableModelTypes": doc.get("availableModelTypes"),
                "inputs": model.get("inputs"), "outputs": model.get("outputs"),
                "float32": info.get("float32"), "int8": info.get("int8"),
                "table": info.get("table")}

    def _store(self, out_dir: Path, staged: list, summary: dict) -> DeployResult:
        base = out_dir / "edge-impulse"
        artifacts, versions = {}, {}
        try:
            for target, name, data, version in staged:
                folder = base / target
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / name
                atomic_write(path, data, 0o755 if name.endswith(".eim") else 0o644)
                for old in folder.iterdir():  # one current artifact per target
                    if old.name != name and old.is_file() and not old.name.startswith("."):
                        old.unlink()
                artifacts[target], versions[target] = str(path), version
            profile = dict(summary, deployment_versions=versions)
            profile_path = base / "profile.json"
            atomic_write(profile_path, json.dumps(profile, indent=2, sort_keys=True).encode(),
                          0o644)
        except OSError as exc:  # e.g. a full disk: worth another try later
            raise DeployError(f"cannot store the Edge Impulse artifacts under {base}: "
                              f"{redact(str(exc), self._key)}", True) from exc
        self.log.info("ei_stored", artifacts=artifacts, versions=versions,
                      profile=str(profile_path))
        return DeployResult(artifacts, versions, str(profile_path), profile)
