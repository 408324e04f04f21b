"""Edge Impulse SDK plumbing: bounded HTTP, error classification, the calls the SDK lacks.

The `edgeimpulse` SDK (1.0.20) builds a fresh `edgeimpulse_api.ApiClient` inside every public
function (`configure_generic_client`), with `urllib3.Retry(total=10, backoff_factor=1)` and no
socket timeout, and takes no client argument: a hung server blocks forever and a dead one is
retried ten times. So, for the span of one deploy, `sdk_session` swaps that factory, in the SDK
modules that call it, for one returning the same client on a `_BoundedREST` transport:
(connect, read) timeouts on every request, urllib3's own retries off (our loop in
edge_impulse.py retries, bounded), and a recorder of the `{id, deploymentVersion}` answer of
each build job started (the SDK drops it, never checks `finishedSuccessful`, then downloads the
*latest* artifact, which after a failed build is an older one).

The calls the SDK lacks (job status, download of one exact deploymentVersion) go through the
SDK's own `edgeimpulse_api` client with this same configuration rather than urllib: same
auth header, host, user agent, TLS settings and bounded transport, answers parsed by the same
models, and one HTTP stack to keep in line.

The session holds a process-wide lock: the SDK reads its key and endpoint from module globals,
and uploads, settings and builds belong to the whole Edge Impulse project, so deploys must be
serialised anyway. Meanwhile the key is redacted from the records of the SDK's loggers (with
its debug switch on, edgeimpulse_api logs whole response bodies, and a project's info carries
its API key), and the SDK's INFO lines go out only when the root logger is at DEBUG.
"""

from __future__ import annotations

import email.utils
import functools
import importlib
import json
import logging
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

DEFAULT_ENDPOINT = "https://studio.edgeimpulse.com/v1"
MAX_RETRY_AFTER = 60.0  # seconds: a larger Retry-After is capped to this
_BUILD_PATH = re.compile(r"/api/(\d+)/jobs/build-ondevice-model$")
_SDK_MODULES = ("edgeimpulse.util", "edgeimpulse.model._functions.profile",
                "edgeimpulse.model._functions.deploy", "edgeimpulse.impulse._functions.build")
_LOGGERS = ("", "edgeimpulse_api", "edgeimpulse_api.rest")
_SDK_DIR = f"{os.sep}edgeimpulse{os.sep}"
_LOCK = threading.Lock()


class DeployError(Exception):
    """A deploy failed. `retryable`: may pass later (5xx, 429, timeouts, failed build job)."""

    def __init__(self, message: str, retryable: bool, *, status: int | None = None,
                 retry_after: float | None = None, retry_now: bool = False) -> None:
        super().__init__(message)
        self.retryable, self.status, self.retry_after = retryable, status, retry_after
        self.retry_now = retry_now  # transport fault: worth another attempt at once


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def retry_after_seconds(value) -> float | None:
    """Retry-After as seconds (delta or HTTP date), capped to MAX_RETRY_AFTER."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        try:
            seconds = email.utils.parsedate_to_datetime(str(value)).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def classify(exc: BaseException, secret: str) -> DeployError:
    """Map an SDK/transport exception to a DeployError; the key never reaches the message."""
    if isinstance(exc, DeployError):
        return exc
    import urllib3
    from edgeimpulse.exceptions import EdgeImpulseException, TimeoutException
    from edgeimpulse_api.exceptions import ApiException

    if isinstance(exc, ApiException):
        status, detail = exc.status or 0, str(exc.reason or "")
        try:
            detail = json.loads(exc.body).get("error") or detail
        except (TypeError, ValueError, AttributeError):
            pass
        detail = redact(str(detail)[:300], secret)
        if status == 401:
            return DeployError("Edge Impulse rejected the API key (HTTP 401)", False, status=401)
        if status == 403:
            return DeployError("Edge Impulse refused access with this API key (HTTP 403): "
                               f"{detail}", False, status=403)
        if status == 429 or status >= 500:
            after = retry_after_seconds((exc.headers or {}).get("Retry-After"))
            return DeployError(f"Edge Impulse answered HTTP {status}: {detail}", True,
                               status=status, retry_after=after, retry_now=True)
        return DeployError(f"Edge Impulse answered HTTP {status}: {detail}", False, status=status)
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        reason = getattr(exc, "reason", None) or exc
        return DeployError(f"network error talking to Edge Impulse: {type(reason).__name__}: "
                           f"{redact(str(reason), secret)[:300]}", True, retry_now=True)
    if isinstance(exc, TimeoutException):
        return DeployError(f"Edge Impulse job timed out: {redact(_sdk_text(exc), secret)}", True)
    if isinstance(exc, EdgeImpulseException):
        return DeployError(f"Edge Impulse SDK: {redact(_sdk_text(exc), secret)}", False)
    return DeployError(f"Edge Impulse: {type(exc).__name__}: {redact(str(exc), secret)[:300]}",
                       False)


def _sdk_text(exc: BaseException) -> str:
    """The SDK's message without its banner and help links."""
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(part.strip() for part in str(text).split("----------------")
                    if part.strip() and "For more information" not in part)[:300]


@dataclass
class BuildJob:
    project_id: int
    job_id: int
    version: int
    target: str


@functools.cache
def _bounded_rest_class():
    from urllib.parse import parse_qs, urlsplit

    from edgeimpulse_api import rest

    class _BoundedREST(rest.RESTClientObject):
        """RESTClientObject with (connect, read) timeouts, no urllib3 retries, build recorder."""

        def __init__(self, configuration, timeout: tuple[float, float], on_build) -> None:
            configuration.retries = False  # urllib3: no retries, errors raised as they are
            super().__init__(configuration)
            self._timeout, self._on_build = timeout, on_build

        def request(self, method, url, query_params=None, headers=None, body=None,
                    post_params=None, _preload_content=True, _request_timeout=None):
            r = super().request(method, url, query_params=query_params, headers=headers,
                                body=body, post_params=post_params,
                                _preload_content=_preload_content,
                                _request_timeout=_request_timeout or self._timeout)
            parts = urlsplit(url)
            m = _BUILD_PATH.search(parts.path)
            if m and method.upper() == "POST" and _preload_content:
                try:
                    doc = json.loads(r.data)
                    target = parse_qs(parts.query).get("type", [""])[-1]
                    self._on_build(BuildJob(int(m.group(1)), int(doc["id"]),
                                            int(doc["deploymentVersion"]), target))
                except (ValueError, KeyError, TypeError):
                    pass  # not a started job: the SDK reports that itself
            return r

    return _BoundedREST


class _SdkLogFilter(logging.Filter):
    """Redacts the key from log records; the SDK's INFO chatter (a line per job poll, a
    second, on the root logger) is kept only when the root logger is at DEBUG."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.levelno == logging.INFO and _SDK_DIR in record.pathname
                and not logging.getLogger().isEnabledFor(logging.DEBUG)):
            return False
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        if self.secret in text:
            record.msg, record.args = redact(text, self.secret), None
        return True


@dataclass
class Session:
    """What one deploy shares: the bounded client and the build jobs the SDK started."""

    client: object = None
    builds: list[BuildJob] = field(default_factory=list)
    _project_id: int | None = None

    def project_id(self) -> int:
        if self._project_id is None:
            from edgeimpulse.util import default_project_id_for

            self._project_id = default_project_id_for(self.client)
        return self._project_id

    def job_state(self, job: BuildJob) -> tuple[bool, bool]:
        """(finished, finishedSuccessful) of a job, from GET /api/{pid}/jobs/{id}/status."""
        from edgeimpulse_api import JobsApi

        info = JobsApi(self.client).get_job_status(project_id=job.project_id, job_id=job.job_id).job
        return bool(info.finished), info.finished_successful is True

    def download_version(self, project_id: int, version: int,
                         max_bytes: int | None = None) -> tuple[str | None, bytes]:
        """(file name from Content-Disposition or None, bytes) of one exact deploymentVersion.

        With max_bytes, a larger answer (by Content-Length, or counted while reading) is
        refused before it is all in memory. A body cut short raises (urllib3 checks the length)."""
        from edgeimpulse_api import DeploymentApi

        r = DeploymentApi(self.client).download_historic_deployment(
            project_id=project_id, deployment_version=version, _preload_content=False)
        try:
            data = _read_capped(r, max_bytes, version)
        except BaseException:
            r.close()  # unread bytes must not go back to the pool with the connection
            raise
        finally:
            r.release_conn()
        found = re.findall(r"filename\*?=([^;]+)", r.headers.get("Content-Disposition") or "")
        name = found[0].strip().replace("utf-8''", "").strip('"') if found else None
        return name, data


def _read_capped(r, max_bytes: int | None, version: int) -> bytes:
    if max_bytes is None:
        return r.read()
    limit = f"deploymentVersion {version} is over the {max_bytes}-byte limit"
    length = r.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise DeployError(f"{limit} (Content-Length {length})", False)
    chunks, total = [], 0
    for chunk in r.stream(1 << 20):
        total += len(chunk)
        if total > max_bytes:
            raise DeployError(limit, False)
        chunks.append(chunk)
    return b"".join(chunks)


@contextmanager
def sdk_session(api_key: str, endpoint: str, connect_timeout: float, read_timeout: float):
    """Point the SDK at endpoint/key with bounded transport; yields a Session. Serialised."""
    import edgeimpulse as ei

    mods = [importlib.import_module(name) for name in _SDK_MODULES]
    rest_cls = _bounded_rest_class()
    timeout = (float(connect_timeout), float(read_timeout))
    session = Session()
    with _LOCK:
        original = mods[0].configure_generic_client
        if any(getattr(m, "configure_generic_client", None) is not original for m in mods):
            raise DeployError("unsupported edgeimpulse SDK layout (configure_generic_client); "
                              "pin edgeimpulse==1.0.20", False)

        def bounded_client(key, key_type="api", host=None):
            client = original(key=key, key_type=key_type, host=host or endpoint)
            client.rest_client = rest_cls(client.configuration, timeout, session.builds.append)
            return client

        saved = (ei.API_KEY, ei.API_ENDPOINT)
        redactor = _SdkLogFilter(api_key)
        for name in _LOGGERS:
            logging.getLogger(name).addFilter(redactor)
        try:
            for m in mods:
                m.configure_generic_client = bounded_client
            ei.API_KEY, ei.API_ENDPOINT = api_key, endpoint
            session.client = bounded_client(api_key, host=endpoint)
            yield session
        finally:
            for m in mods:
                m.configure_generic_client = original
            ei.API_KEY, ei.API_ENDPOINT = saved
            for name in _LOGGERS:
                logging.getLogger(name).removeFilter(redactor)
