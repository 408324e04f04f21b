"""A loopback Edge Impulse stand-in: exactly the REST calls the `edgeimpulse` SDK makes.

Runs a ThreadingHTTPServer on 127.0.0.1 (port 0) under `/v1`, so tests point the real SDK at
`standin.endpoint`. Every JSON answer carries `success` and validates against the SDK's pydantic
models (tests/test_edge_impulse.py checks that). Auth is the `x-api-key` header, else 401.

Fault knobs, settable while it runs:
- `fail_next(path_regex, status, times=1, retry_after=None, method=None)`: answer the next
  matching requests with `status` (and a Retry-After header if given).
- `hang(path_regex, seconds, times=None)`: hold matching requests that long before answering.
- `build_fails = True`: build jobs finish with finishedSuccessful false; `/deployment/download`
  then still serves the newest OLDER successful artifact, as the real service does.
  `build_fails_for = {"runner-linux-aarch64"}`: the same, for those targets only.
- `offered_targets`: the project's deployment targets (`GET .../deployment/targets/data-sources`,
  what `ei.model.list_deployment_targets()` reads); building another one is refused (HTTP 400).
  Default: all of TARGETS.
- `eim_body = b"..."`: what a runner (`.eim`) build produces instead of eim_artifact(...).
- `cut_next(path_regex, times=1)`: the next matching answers announce their full Content-Length,
  send half the body and close the connection (a download that dies midway).
Records: `counts` ("METHOD /path" -> n), `count(regex, method=None)`, `last_upload` (bytes of
the last uploaded model), `uploads`, `saved` (last pretrained-model/save body), `builds`.

The history starts (unless seed_history=False) with version 1 of "zip" and the runner targets
already built (an older artifact), so new builds get deploymentVersion 2, 3, ...
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import io
import json
import re
import threading
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NOW = "2026-01-01T00:00:00.000Z"
TARGETS = ("zip", "runner-linux-aarch64", "runner-linux-armv7", "wasm", "arduino")
DEVICES = ("raspberry-pi-4", "raspberry-pi-5", "cortex-m4f-80mhz", "jetson-nano")


def zip_artifact(version: int, target: str, model_sha256: str) -> bytes:
    """A small zip whose bytes depend only on (version, target, model hash)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        meta = {"deploymentVersion": version, "target": target, "model_sha256": model_sha256}
        for name, text in (("deployment.json", json.dumps(meta, sort_keys=True)),
                           ("README.txt", f"stand-in build v{version} for {target}\n")):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), text)
    return buf.getvalue()


def eim_artifact(version: int, target: str, model_sha256: str) -> bytes:
    """An ELF-ish blob (magic + a line naming the version)."""
    return (b"\x7fELF\x02\x01\x01" + b"\0" * 9
            + f"stand-in runner {target} deploymentVersion={version} "
              f"model={model_sha256}\n".encode())


def artifact_for(version: int, target: str, model_sha256: str) -> tuple[str | None, bytes]:
    if target.startswith("runner-"):
        return "model.eim", eim_artifact(version, target, model_sha256)
    return f"ei-standin-{target}-v{version}.zip", zip_artifact(version, target, model_sha256)


def _target(fmt: str) -> dict:
    return {"name": fmt, "description": f"{fmt} build", "image": "/img.png", "imageClasses": "",
            "format": fmt, "hasEonCompiler": True, "hasTensorRT": False, "hasTensaiFlow": False,
            "hasDRPAI": False, "hasTIDL": False, "hasAkida": False, "hasMemryx": False,
            "hasStAton": False, "hasCevaNpn": False, "hasNordicAxon": False, "hasQaic": False,
            "hideOptimizations": False, "uiSection": "library",
            "supportedEngines": ["tflite", "tflite-eon"], "preferredEngine": "tflite",
            "docsUrl": "https://docs.invalid/", "parameters": [],
            "modelVariants": [{"variant": "float32", "supported": True},
                              {"variant": "int8", "supported": True}]}


def _mcu(desc: str, supported: bool) -> dict:
    return {"description": desc, "supported": supported, "timePerInferenceMs": 900,
            "memory": {"tflite": {"ram": 900_000, "rom": 2_600_000}}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:
        self.server.standin._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.standin._handle(self, "POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    standin: "EIStandIn"


class EIStandIn:
    def __init__(self, api_key: str = "ei_standin_key_0123456789abcdef", project_id: int = 4242,
                 output_classes: int = 2, job_polls: int = 0, seed_history: bool = True) -> None:
        self.api_key, self.project_id = api_key, project_id
        self.output_classes = output_classes  # second dimension of the model's output
        self.job_polls = job_polls  # status polls before a job reports finished
        self.build_fails = False
        self.build_fails_for: set[str] = set()
        self.offered_targets: list[str] = list(TARGETS)
        self.eim_body: bytes | None = None
        self.counts: Counter[str] = Counter()
        self.uploads: list[dict] = []
        self.last_upload: bytes | None = None
        self.saved: dict | None = None
        self.builds: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._faults: list[dict] = []
        self._hangs: list[dict] = []
        self._cuts: list[dict] = []
        self._jobs: dict[int, dict] = {}
        self._next_job = 100
        self._next_version = 2
        self._profiled_device: str | None = None
        self._history: dict[int, dict] = {}
        for target in TARGETS if seed_history else ():
            if target == "zip" or target.startswith("runner-"):
                name, data = artifact_for(1, target, "older-model")
                self._history.setdefault(1, {})[target] = {"ok": True, "name": name, "data": data}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "EIStandIn":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.standin = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="ei-standin",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # releases hung handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def __enter__(self) -> "EIStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # -- knobs -----------------------------------------------------------------------------
    def fail_next(self, path_regex: str, status: int, times: int = 1,
                  retry_after: float | None = None, method: str | None = None) -> None:
        with self._lock:
            self._faults.append({"re": re.compile(path_regex), "status": status, "times": times,
                                 "retry_after": retry_after, "method": method})

    def hang(self, path_regex: str, seconds: float, times: int | None = None) -> None:
        with self._lock:
            self._hangs.append({"re": re.compile(path_regex), "seconds": seconds, "times": times})

    def cut_next(self, path_regex: str, times: int = 1) -> None:
        with self._lock:
            self._cuts.append({"re": re.compile(path_regex), "times": times})

    def count(self, path_regex: str, method: str | None = None) -> int:
        rx = re.compile(path_regex)
        with self._lock:
            return sum(n for key, n in self.counts.items()
                       if (method is None or key.split(" ", 1)[0] == method)
                       and rx.search(key.split(" ", 1)[1]))

    @property
    def next_version(self) -> int:
        """The deploymentVersion the next build will get."""
        with self._lock:
            return self._next_version

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    # -- plumbing --------------------------------------------------------------------------
    def _take(self, items: list[dict], method: str, path: str) -> dict | None:
        with self._lock:
            for item in items:
                if item.get("method") not in (None, method) or not item["re"].search(path):
                    continue
                if item["times"] is not None:
                    item["times"] -= 1
                    if item["times"] <= 0:
                        items.remove(item)
                return item
        return None

    def _handle(self, h: _Handler, method: str) -> None:
        url = urlsplit(h.path)
        path, query = url.path, {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        with self._lock:
            self.counts[f"{method} {path}"] += 1
        try:
            hang = self._take(self._hangs, method, path)
            if hang is not None:
                self._stop.wait(hang["seconds"])
            fault = self._take(self._faults, method, path)
            if fault is not None:
                headers = {}
                if fault["retry_after"] is not None:
                    headers["Retry-After"] = str(fault["retry_after"])
                return self._json(h, fault["status"], {"success": False, "error": "injected fault"},
                                  headers)
            if h.headers.get("x-api-key") != self.api_key:
                return self._json(h, 401, {"success": False, "error": "Invalid API key"})
            if not path.startswith("/v1/api/"):
                return self._json(h, 404, {"success": False, "error": "Not found"})
            status, payload, headers = self._route(method, path[len("/v1"):], query, body, h)
            if isinstance(payload, bytes):
                cut = self._take(self._cuts, method, path) is not None
                return self._raw(h, status, payload, headers, cut=cut)
            return self._json(h, status, payload, headers)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts)
            h.close_connection = True

    def _json(self, h: _Handler, status: int, payload: dict, headers: dict | None = None) -> None:
        self._raw(h, status, json.dumps(payload).encode(), headers,
                  "application/json; charset=utf-8")

    def _raw(self, h: _Handler, status: int, data: bytes, headers: dict | None = None,
             ctype: str = "application/octet-stream", cut: bool = False) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if cut:  # half the announced body, then the connection is closed
            h.wfile.write(data[:len(data) // 2])
            h.close_connection = True
            return
        h.wfile.write(data)

    # -- the API ---------------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict, body: bytes, h: _Handler):
        ok = {"success": True}
        if method == "GET" and path == "/api/projects":
            return 200, {"success": True, "projects": [self._project()]}, None
        m = re.fullmatch(r"/api/(\d+)(/.*)?", path)
        if not m or int(m.group(1)) != self.project_id:
            return 404, {"success": False, "error": "Project not found"}, None
        rest = m.group(2) or ""
        if method == "GET" and rest == "":
            return 200, self._project_info(), None
        if method == "POST" and rest == "/pretrained-model/upload":
            return self._upload(body, h.headers.get("Content-Type", ""))
        if method == "POST" and rest == "/pretrained-model/profile":
            if not self.uploads:
                return 200, {"success": False, "error": "No pretrained model uploaded"}, None
            self._profiled_device = self.uploads[-1].get("device")
            return 200, {"success": True, "id": self._new_job("profile-model")}, None
        if method == "GET" and rest == "/pretrained-model":
            return 200, self._model_info(), None
        if method == "POST" and rest == "/pretrained-model/save":
            self.saved = json.loads(body or b"{}")
            return 200, ok, None
        if method == "GET" and rest in ("/deployment/targets/data-sources", "/deployment/targets"):
            return 200, {"success": True, "targets": [_target(t) for t in self.offered_targets]}, None
        if method == "POST" and rest == "/jobs/build-ondevice-model":
            return self._build(query.get("type", ""), json.loads(body or b"{}"))
        jm = re.fullmatch(r"/jobs/(\d+)/(status|stdout|cancel)", rest)
        if jm:
            return self._job_call(method, int(jm.group(1)), jm.group(2))
        if method == "GET" and rest == "/deployment/download":
            return self._download_latest(query.get("type", ""))
        hm = re.fullmatch(r"/deployment/history/(\d+)/download", rest)
        if method == "GET" and hm:
            return self._download_version(int(hm.group(1)))
        return 404, {"success": False, "error": f"No route {method} {path}"}, None

    def _project(self) -> dict:
        return {"id": self.project_id, "name": "fedcam-standin", "description": "stand-in",
                "created": NOW, "owner": "fedcam", "ownerIsDeveloperProfile": False,
                "collaborators": [], "labelingMethod": "single_label", "metadata": {},
                "isEnterpriseProject": False, "whitelabelId": 1, "tier": "free",
                "hasPublicVersion": False, "isPublic": False, "allowsLivePublicAccess": False,
                "indPauseProcessingSamples": False, "publicProjectListed": False}

    def _project_info(self) -> dict:
        summary = {"totalLengthMs": 0.0, "labels": [], "totalLabels": 0, "dataCount": 0}
        devices = [{"mcu": d, "name": d, "selected": d == "raspberry-pi-4", "int8Latency": 1.0,
                    "int8ConvLatency": 1.0, "float32Latency": 2.0, "float32ConvLatency": 2.0,
                    "helpText": ""} for d in DEVICES]
        return {
            "success": True, "project": self._project(),
            # like the real service: the project's development key comes back in the body
            "developmentKeys": {"apiKey": self.api_key},
            "impulse": {"created": False, "configured": False, "complete": False},
            "devices": [], "dataSummary": summary,
            "dataSummaryPerCategory": {"training": summary, "testing": summary,
                                       "validation": summary, "postProcessing": summary},
            "computeTime": {"periodStartDate": NOW, "periodEndDate": NOW, "timeUsedMs": 0,
                            "timeLeftMs": 1_000_000},
            "acquisitionSettings": {"intervalMs": 10.0, "lengthMs": 1000, "segmentShift": False,
                                    "defaultPageSize": 20, "viewType": "list",
                                    "gridColumnCount": 3, "gridColumnCountDetailed": 3,
                                    "showExactSampleLength": False,
                                    "inlineEditBoundingBoxes": False},
            "collaborators": [],
            "deploySettings": {"eonCompiler": True, "sensor": "camera",
                               "arduinoLibraryName": "fedcam", "tinkergenLibraryName": "fedcam",
                               "particleLibraryName": "fedcam"},
            "experiments": [], "latencyDevices": devices, "urls": {},
            "showCreateFirstImpulse": False,
            "showGettingStartedWizard": {"showWizard": False, "step": 0},
            "performance": {"gpu": False, "jobLimitM": 60, "dspFileSizeMb": 100,
                            "enterprisePerformance": False, "trainJobRamMb": 4096},
            "trainJobNotificationUids": [], "dspJobNotificationUids": [],
            "modelTestingJobNotificationUids": [], "exportJobNotificationUids": [],
            "hasNewTrainingData": False, "studioUrl": "http://127.0.0.1/studio",
            "inPretrainedModelFlow": True, "showSensorDataInAcquisitionGraph": False,
            "notifications": [],
        }

    def _upload(self, body: bytes, ctype: str):
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        if not msg.is_multipart():
            return 400, {"success": False, "error": "expected multipart/form-data"}, None
        fields: dict = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = part.get_payload(decode=True)
        data = fields.get("modelFile")
        ftype = (fields.get("modelFileType") or b"").decode()
        device = (fields.get("device") or b"").decode() or None
        if not data or ftype not in ("tflite", "onnx", "saved_model"):
            return 400, {"success": False, "error": "modelFile and modelFileType required"}, None
        if ftype == "tflite" and data[4:8] != b"TFL3":
            return 200, {"success": False, "error": "Not a TFLite file"}, None
        if device is not None and device not in DEVICES:
            return 200, {"success": False, "error": f"Unknown device {device}"}, None
        with self._lock:
            self.last_upload = data
            self.uploads.append({"bytes": data, "type": ftype, "device": device,
                                 "name": (fields.get("modelFileName") or b"").decode()})
            self._profiled_device = None
        return 200, {"success": True, "id": self._new_job("upload-pretrained-model")}, None

    def _model_info(self) -> dict:
        if not self.uploads:
            return {"success": False, "error": "No pretrained model",
                    "specificDeviceSelected": False, "availableModelTypes": []}
        up = self.uploads[-1]
        model: dict = {"fileName": up["name"] or "model",
                       "inputs": [{"dataType": "float32", "name": "pixels",
                                   "shape": [1, 160, 160, 3]}],
                       "outputs": [{"dataType": "float32", "name": "probabilities",
                                    "shape": [1, self.output_classes]}],
                       "supportsTFLite": True}
        device = self._profiled_device
        if device:
            model["profileInfo"] = {
                "float32": {"variant": "float32", "device": device,
                            "tfliteFileSizeBytes": len(up["bytes"]), "isSupportedOnMcu": False,
                            "memory": {"tflite": {"ram": 900_000, "rom": 2_600_000,
                                                  "arenaSize": 800_000}},
                            "timePerInferenceMs": 42, "customMetrics": [], "hasPerformance": True},
                "table": {"variant": "float32",
                          "lowEndMcu": _mcu("Cortex-M0+", False),
                          "highEndMcu": _mcu("Cortex-M7", False),
                          "highEndMcuPlusAccelerator": _mcu("Cortex-M55 + Ethos-U55", False),
                          "mpu": {"description": "Cortex-A72", "supported": True,
                                  "timePerInferenceMs": 42, "rom": 2_600_000.0},
                          "gpuOrMpuAccelerator": {"description": "GPU", "supported": True,
                                                  "timePerInferenceMs": 5, "rom": 2_600_000.0}}}
        return {"success": True, "specificDeviceSelected": device is not None,
                "availableModelTypes": ["float32"], "model": model}

    def _new_job(self, kind: str, ok: bool = True, version: int | None = None) -> int:
        with self._lock:
            self._next_job += 1
            self._jobs[self._next_job] = {"kind": kind, "ok": ok, "polls": 0, "cancelled": False,
                                          "version": version}
            return self._next_job

    def _build(self, target: str, req: dict):
        if target not in self.offered_targets:
            return 400, {"success": False, "error": f"Unknown deployment type {target!r}"}, None
        if self.saved is None or not self.uploads:
            return 200, {"success": False, "error": "No pretrained model configured"}, None
        with self._lock:
            version = self._next_version
            self._next_version += 1
            ok = not self.build_fails and target not in self.build_fails_for
            sha = hashlib.sha256(self.uploads[-1]["bytes"]).hexdigest()
            name, data = artifact_for(version, target, sha)
            if target.startswith("runner-") and self.eim_body is not None:
                data = self.eim_body
            self._history.setdefault(version, {})[target] = {"ok": ok, "name": name, "data": data}
        job = self._new_job(f"build-{target}", ok=ok, version=version)
        self.builds.append({"job": job, "version": version, "target": target, "ok": ok,
                            "request": req})
        return 200, {"success": True, "id": job, "deploymentVersion": version}, None

    def _job_call(self, method: str, job_id: int, what: str):
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return 200, {"success": False, "error": f"Unknown job ID {job_id}"}, None
            if what == "cancel" and method == "POST":
                job["cancelled"] = True
                return 200, {"success": True}, None
            if what == "stdout" and method == "GET":
                lines = [{"created": NOW, "data": f"{job['kind']} done", "logLevel": "info"}]
                return 200, {"success": True, "stdout": lines, "totalCount": 1}, None
            if what != "status" or method != "GET":
                return 404, {"success": False, "error": "No route"}, None
            job["polls"] += 1
            finished = job["cancelled"] or job["polls"] > self.job_polls
            info = {"id": job_id, "category": job["kind"], "categoryKey": job["kind"],
                    "key": f"job-{job_id}", "created": NOW, "started": NOW,
                    "jobNotificationUids": []}
            if finished:
                info["finished"] = NOW
                info["finishedSuccessful"] = job["ok"] and not job["cancelled"]
            return 200, {"success": True, "job": info}, None

    def _artifact(self, entry: dict):
        headers = {"Content-Disposition": f'attachment; filename="{entry["name"]}"'}
        return 200, entry["data"], headers

    def _download_latest(self, target: str):
        with self._lock:
            for version in sorted(self._history, reverse=True):
                entry = self._history[version].get(target)
                if entry and entry["ok"]:
                    return self._artifact(entry)
        return 404, {"success": False, "error": f"No deployment for {target}"}, None

    def _download_version(self, version: int):
        with self._lock:
            entries = [e for e in self._history.get(version, {}).values() if e["ok"]]
        if not entries:
            return 404, {"success": False, "error": f"No deployment version {version}"}, None
        return self._artifact(entries[0])
