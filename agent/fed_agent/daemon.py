"""The agent's main loop: supervise the SuperNode, ingest the inbox, tell systemd how we are.

Each image the inbox files is handed to the inference worker (inference.py), which
classifies it with the running model off this loop; the heartbeat carries what it saw. An
image without a label is then pseudo-labeled or sent to review (pseudo_labels.py); each scan
also checks the running version, so a rollback withdraws the newer model's pseudo labels.
The pseudo-labeler's index changes are written by this loop, once a second; a filed image wakes the embedder.

WATCHDOG=1 is sent from this loop only, and only while the loop's helpers are alive: if the
loop hangs (or a helper thread died), the pings stop and systemd's WatchdogSec restarts us.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path
from typing import Optional

from fed_common.files import remove_stale_temp_files
from fed_common.heartbeat import FieldSummary, Heartbeat, ImageCounts, SupernodeStatus
from fed_common.node_config import LastTraining
from fed_common.notify import Notifier
from fed_common.store import UNLABELED, StoreLayout

from . import __version__
from .capture import Camera
from .clock import ClockWatch
from .embedder import embedder
from .health import system_snapshot
from .heartbeat import HeartbeatSender
from .inbox import Inbox
from .inference import FiledImage, field_inference, running_classifier
from .model_updater import model_updater
from .pi_monitor import PiMonitor
from .pseudo_labels import PseudoLabeler, labeling_policy
from .store_writer import IndexBusy
from .supervisor import SuperNodeSupervisor

LAST_EXIT_MAX = 300  # SupernodeStatus.last_exit's bound
STORE_ERROR_MAX = 300  # Heartbeat.store_error's bound


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class ReachabilityProbe(threading.Thread):
    """Is the SuperLink's port reachable? (The SuperNode logs its retries only at DEBUG.)"""

    def __init__(self, address: str, every: float = 3.0) -> None:
        super().__init__(name="probe", daemon=True)
        self.host, self.port = split_host_port(address)
        self.every = every
        self.reachable = False
        self.stop_event = threading.Event()

    def run(self) -> None:
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=2):
                    self.reachable = True
            except OSError:
                self.reachable = False
            if self.stop_event.wait(self.every):
                return


class Agent:
    def __init__(self, cfg, log, stop_timeout: float = 10.0) -> None:
        self.cfg, self.log, self.stop_timeout = cfg, log, stop_timeout
        self.notifier = Notifier()
        self.supervisor = SuperNodeSupervisor(cfg, log)
        layout = StoreLayout(cfg.agent.state_dir)  # what an interrupted write left (the inbox cleans its own)
        for folder, recursive in ((layout.state_dir, False), (layout.cache_dir, True)):
            for stale in remove_stale_temp_files(folder, recursive):
                log.info("stale_temp_file_removed", file=str(stale))
        self.inbox = Inbox(Path(cfg.agent.state_dir), list(cfg.labels),
                           min_width=cfg.inbox.min_width, min_height=cfg.inbox.min_height,
                           max_bytes=cfg.inbox.max_bytes, test_fraction=cfg.inbox.test_fraction,
                           settle_seconds=cfg.inbox.settle_seconds, max_pixels=cfg.inbox.max_pixels,
                           index_save_seconds=cfg.inbox.index_save_seconds)
        self.probe = ReachabilityProbe(cfg.coordinator.superlink)
        self.clock = ClockWatch(cfg.clock, log)  # the SuperNode waits for a synchronised clock
        self.pi = PiMonitor(cfg, self.supervisor.status_file)
        self.started = time.monotonic()  # uptime must not jump when NTP sets the clock
        self.counts: dict = self.inbox.counts()
        self._lock = threading.Lock()
        self.classifier = running_classifier(cfg, log)  # one running model: inference and self-tests
        self.labeler = PseudoLabeler(self.inbox.writer, labeling_policy(cfg.labeling), log)
        self.inference = field_inference(cfg, self.classifier, log, self.labeler)  # None: inference disabled
        self.heartbeat = HeartbeatSender(cfg.coordinator.heartbeat_url, cfg.heartbeat.token_file,
                                         cfg.heartbeat.interval, cfg.heartbeat.timeout,
                                         self.snapshot, log, ca_file=cfg.coordinator.root_certificates,
                                         on_reply=self._heartbeat_reply, on_accepted=self._heartbeat_accepted,
                                         on_date=self.clock.record_reply_date,
                                         on_failure=self.clock.record_heartbeat_error)
        self.models = model_updater(cfg, self.heartbeat, self.supervisor, log, self.classifier)
        self.camera = Camera(cfg.capture, layout.inbox_dir / UNLABELED, log) if cfg.capture.enabled else None
        self.embedder = embedder(cfg, self.inbox, self.supervisor, log)  # embeddings at ingest, while idle
        self.stop_requested = threading.Event()

    # -- state -------------------------------------------------------------------------
    def connection_state(self) -> str:
        if not self.supervisor.running():
            return "restarting" if self.supervisor.restarts else "starting"
        if not self.probe.reachable:
            return "reconnecting"
        return "connected" if self.supervisor.registered else "connecting"

    def last_training(self) -> Optional[LastTraining]:
        return LastTraining.read(self.supervisor.status_file)

    def snapshot(self) -> Heartbeat:
        """The heartbeat, built as the model the coordinator validates against: a value that
        does not fit fails here with the field named (the sender logs it and retries),
        rather than as a 422 at the API."""
        with self._lock:
            counts = self.counts  # replaced whole by ingest(), never changed in place
        last, sup = self.last_training(), self.supervisor
        problem = self.inbox.storage_problem
        last_exit = sup.last_exit[:LAST_EXIT_MAX] if sup.last_exit else None
        return Heartbeat(
            agent=self.cfg.agent.name, version=__version__,
            uptime_seconds=round(time.monotonic() - self.started, 1),
            supernode=SupernodeStatus(state=self.connection_state(), node_id=sup.node_id,
                                      restarts=sup.restarts, last_exit=last_exit),
            last_training=last,
            model_version=(last.backbone_sha or None) if last else None,  # for now: the backbone
            images=ImageCounts.model_validate(counts),
            disk_full=bool(problem and problem.startswith("disk full")),
            store_error=problem[:STORE_ERROR_MAX] if problem else None,
            running_model=self.models.status() if self.models else None,
            field=self.field_summary(),
            camera=self.camera.status() if self.camera else None,
            clock=self.clock.status(),
            pi_health=self.pi.health(),
            **system_snapshot(Path(self.cfg.agent.state_dir), self.cfg.health.thermal_dir),
        )

    def field_summary(self) -> Optional[FieldSummary]:
        """What the running model saw since the last accepted heartbeat (field.py says how
        the counts are kept); None with inference disabled, or nothing seen and no model."""
        if self.inference is None:
            return None
        manifest = self.classifier.manifest()
        return self.inference.tally.summary(manifest.version if manifest else None)

    def status_line(self) -> str:
        state = self.connection_state()
        parts = [f"{state} to {self.cfg.coordinator.superlink}"]
        if self.inbox.storage_problem:  # first, so `systemctl status` shows it without scrolling
            parts.insert(0, f"INBOX STOPPED, {self.inbox.storage_problem}")
        last = self.last_training()
        if last:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last.time))
            acc = last.local_test_accuracy
            parts.append(f"last campaign {last.campaign or last.run_id} at {when}"
                         + (f", local acc {acc:.2f}" if acc is not None else ""))
        else:
            parts.append("no campaign yet")
        with self._lock:
            c = self.counts
        if self.models is not None:
            model = self.models.status()
            parts.append(f"model {'v%d' % model.version if model.version else 'none'} {model.state}"
                         + (f" ({model.reason})" if model.reason else ""))
        per_label = " ".join(f"{k} {v['train'] + v['test']}" for k, v in c["labels"].items())
        parts.append(f"images {per_label}, {c['quarantined']} quarantined")
        without_label = c["pseudo"] + c["review"] + c["unlabeled"]
        if without_label:
            parts[-1] += f", {without_label} unlabeled ({c['pseudo']} pseudo, {c['review']} to review)"
        if self.inference is not None:
            parts.append(self._field_status())
        pi_problems, readings = self.pi.status()  # problems first, like the disk's and the camera's
        parts[0:0] = pi_problems
        parts += [readings] if readings else []
        clock_first, clock_last = self.clock.status_parts()
        parts[0:0] = clock_first  # a wait or an offset Flower refuses: first
        parts += clock_last
        if self.camera is not None:
            camera = self.camera.status()
            if camera.state == "failing":  # first, with the disk: a blind camera is what a site must see
                since = time.strftime("%H:%M", time.localtime(camera.failing_since))
                parts.insert(0, f"CAMERA FAILING since {since}: {camera.last_error}")
            else:
                parts.append(f"camera {camera.frames_today} frames today")
        return "; ".join(parts)

    def _field_status(self) -> str:
        """Since start: `field 12 images, 8% low confidence, 2 not classified`."""
        totals, errors = self.inference.tally.totals(), self.inference.errors
        text = f"field {totals.images} images"
        if totals.images:
            text += f", {totals.low_confidence_share:.0%} low confidence"
        return text + (f", {errors} not classified" if errors else "")

    def _heartbeat_reply(self, reply: dict) -> None:
        desired = reply.get("desired_model")
        if self.models is not None:
            self.models.want(desired if isinstance(desired, int) and desired >= 1 else None)

    def _heartbeat_accepted(self, heartbeat: Heartbeat) -> None:
        if self.inference is not None:
            self.inference.tally.accepted(heartbeat.field)

    # -- loop --------------------------------------------------------------------------
    def healthy(self) -> bool:
        inference_ok = self.inference is None or self.inference.healthy()
        camera_ok = self.camera is None or self.camera.is_alive()
        return self.heartbeat.is_alive() and self.probe.is_alive() and inference_ok and camera_ok

    def ingest(self) -> None:
        report = self.inbox.ingest()
        if self.inference is not None:  # classified off this thread, once safely filed
            for entry in report.filed:
                self.inference.submit(FiledImage(self.inbox.store.path_of(entry), entry.sha256, entry.label))
            for entry in self._to_classify_again():
                self.inference.submit(FiledImage(self.inbox.store.path_of(entry), entry.sha256, None),
                                      unless_waiting=True)
        counts = self.inbox.counts()
        with self._lock:
            self.counts = counts
        if report.filed:
            self.embedder.wake()
        if report.accepted or report.quarantined:
            self.log.info("inbox_ingested", accepted=len(report.accepted),
                          quarantined=len(report.quarantined), labeled=len(report.labeled))

    def _to_classify_again(self) -> list:
        """The unlabeled images the running model has not decided on: after a model change or
        a rollback (whose pseudo labels are withdrawn here), and at start."""
        manifest = self.classifier.manifest()
        try:
            return self.labeler.follow(manifest.version if manifest else None)
        except (OSError, IndexBusy) as exc:  # tried again at the next scan
            self.log.warning("pseudo_labels_not_followed", error=str(exc)[:300])
            return []

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_requested.set())
        wd = Notifier.watchdog_seconds()
        tick = min(1.0, wd / 3) if wd else 1.0
        self.ingest()
        self._supervise()
        self.probe.start()
        if self.inference is not None:
            self.inference.start()
        self.heartbeat.start()
        self.embedder.start()
        if self.models is not None:
            self.models.start()
        if self.camera is not None:
            self.camera.start()
        self.notifier.ready()
        self.log.info("agent_ready", version=__version__, watchdog_seconds=wd,
                      superlink=self.cfg.coordinator.superlink)
        next_scan = time.monotonic() + self.cfg.inbox.scan_interval
        while not self.stop_requested.wait(tick):
            self._supervise()
            if time.monotonic() >= next_scan:
                self.ingest()
                next_scan = time.monotonic() + self.cfg.inbox.scan_interval
            if self.inbox.writer.unsaved:
                self.inbox.flush()  # the pseudo-labeler's changes, one write for a burst
            self.notifier.status(self.status_line())
            if self.healthy():
                self.notifier.watchdog()
            else:
                self.log.error("agent_unhealthy", heartbeat_alive=self.heartbeat.is_alive(),
                               probe_alive=self.probe.is_alive(),
                               inference_alive=self.inference.healthy() if self.inference else None)
        return self.shutdown()

    def _supervise(self) -> None:
        if self.clock.may_start_supernode():  # held back while the clock syncs (fed_agent.clock)
            self.supervisor.poll()

    def shutdown(self) -> int:
        self.notifier.stopping()
        self.notifier.status("stopping")
        self.log.info("agent_stopping")
        self.heartbeat.stop()
        self.embedder.stop()
        if self.camera is not None:
            self.camera.stop_event.set()
        if self.inference is not None:
            self.inference.stop()
        self.inbox.flush(coalesce=False)  # what the SD-card saving held back
        if self.models is not None:
            self.models.stop_event.set()
            self.models.wake.set()
        self.probe.stop_event.set()
        self.supervisor.stop(self.stop_timeout)
        self.log.info("agent_stopped")
        return 0
