"""fed-coordinator: the long-running server service.

One process owns: the flower-superlink child, the fleet API (uvicorn thread), the scheduler
(decided in the main loop), one campaign at a time (worker thread) and the deploy queue
(worker thread). The main loop never blocks on any of them, so WATCHDOG=1 means "the loop
runs"; a hung loop is restarted by systemd.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import uvicorn

from fed_common.notify import Notifier

from .api import create_app
from .campaign import FEDAPP_DIR, CampaignRunner, new_campaign_id
from .champion import gate
from .config import CampaignSection
from .deploy_queue import DeployWorker
from .fleet import fleet_view
from .flower import FlwrCli, FlwrError, SuperLink
from .metrics import metrics_text
from .registry import ModelRegistry
from .schedule import ScheduleConfig, Scheduler
from .state import State


class Coordinator:
    def __init__(self, cfg, log) -> None:
        self.cfg, self.log = cfg, log
        root = Path(cfg.service.state_dir)
        self.state = State(root / "coordinator.db")
        self.registry = ModelRegistry(root / "models")
        self.notify = Notifier()
        self.link = SuperLink(root / "superlink", host=cfg.superlink.host, port=cfg.superlink.port,
                              insecure=cfg.superlink.ssl_certfile is None,
                              extra_args=self._superlink_tls_args(), new_session=False)
        self.cli = FlwrCli(root / "flwr-cli", self._control_address(), insecure=cfg.superlink.ssl_certfile is None,
                           root_certificates=cfg.superlink.ssl_ca_certfile)
        app_dir = cfg.campaign.app_dir or FEDAPP_DIR
        if not (Path(app_dir) / "pyproject.toml").is_file():
            raise SystemExit(f"fed-coordinator: no Flower App at {app_dir} (set campaign.app_dir)")
        self.runner = CampaignRunner(root, self.cli, self.registry, log, app_dir=Path(app_dir))
        self.scheduler = self._scheduler(ScheduleConfig(**cfg.schedule.model_dump()))
        self.deployer = DeployWorker(self.state, self.registry, cfg.edge_impulse, log)
        self.stop = threading.Event()
        self.campaign: threading.Thread | None = None
        self.link_restarts = 0
        self._online = (0, 0.0)

    def _scheduler(self, schedule: ScheduleConfig) -> Scheduler:
        try:
            return Scheduler(schedule, self.state.get("scheduler"))
        except ValueError as exc:  # a damaged saved state must not crash-loop the service
            self.log.error("scheduler_state_reset", reason=str(exc))
            return Scheduler(schedule, None)

    def _superlink_tls_args(self) -> list[str]:
        s = self.cfg.superlink
        args = []
        for flag, value in (("--ssl-certfile", s.ssl_certfile), ("--ssl-keyfile", s.ssl_keyfile),
                            ("--ssl-ca-certfile", s.ssl_ca_certfile)):
            if value:
                args += [flag, str(value)]
        if s.enable_supernode_auth:
            args.append("--enable-supernode-auth")
        return args

    def _control_address(self) -> str:
        host = "127.0.0.1" if self.cfg.superlink.host in ("0.0.0.0", "::") else self.cfg.superlink.host
        return f"{host}:{self.cfg.superlink.port}"

    # -- campaigns ---------------------------------------------------------------------------
    def settings(self) -> CampaignSection:
        return self.cfg.campaign

    def agents_online(self) -> int:
        count, at = self._online
        if time.monotonic() - at > 15:
            try:
                count = sum(1 for n in self.cli.supernodes() if n.get("status") == "online")
            except (FlwrError, OSError) as exc:
                self.log.warning("supernode_list_failed", error=str(exc))
                count = 0
            self._online = (count, time.monotonic())
        return count

    def start_campaign(self, trigger: str, slot: datetime | None) -> str:
        cid = new_campaign_id()
        slot_text = slot.isoformat() if slot else None
        self.state.campaign_started(cid, trigger, slot_text)
        self.campaign = threading.Thread(target=self._campaign_body, args=(cid, trigger, slot_text),
                                         name="campaign", daemon=True)
        self.campaign.start()
        return cid

    def _campaign_body(self, cid: str, trigger: str, slot: str | None) -> None:
        """Run the campaign; resubmit it once (a loop, as a new campaign id) when it failed
        because the SuperLink restarted under it."""
        for attempt in (1, 2):
            restarts_before = self.link_restarts
            status = self._campaign_attempt(cid)
            if status != "failed" or self.link_restarts == restarts_before or attempt == 2:
                return
            new_cid = new_campaign_id()
            self.log.warning("campaign_resubmitted", campaign=cid, new_campaign=new_cid,
                             reason="the SuperLink restarted during the run")
            self.state.campaign_started(new_cid, "resubmit", slot, attempt=attempt + 1)
            cid = new_cid

    def _campaign_attempt(self, cid: str) -> str:
        """One run of a campaign, recorded; returns its status ("crashed" is never retried)."""
        log = self.log.bind(campaign=cid)

        def on_event(event: dict) -> None:
            if event["event"] == "submitted":
                self.state.campaign_run_id(cid, event["run_id"])
            elif event["event"] == "round":
                self.state.round_recorded(cid, event)

        try:
            outcome = self.runner.run(self.settings(), on_event, cid=cid)
        except Exception as exc:  # noqa: BLE001 - recorded, never kills the service
            log.exception("campaign_crashed")
            self.state.campaign_finished(cid, "failed", f"internal error: {exc}", None)
            return "crashed"
        if outcome.model_version is not None:
            # Before the campaign reads as finished: whoever waits for it sees the gate's verdict.
            try:
                self.apply_gate(outcome.model_version, cid, log)
            except Exception as exc:  # noqa: BLE001 - the model stays registered, unpromoted
                log.exception("champion_gate_failed")
                self.state.model_recorded(outcome.model_version, cid, None, "candidate",
                                          f"champion gate failed: {exc}")
        self.state.campaign_finished(cid, outcome.status, outcome.reason, outcome.model_version)
        return outcome.status

    def apply_gate(self, version: int, cid: str, log) -> None:
        c = self.cfg.campaign
        d = gate(self.registry, version, self.state.champion(), Path(c.server_data_dir) / "test",
                 list(c.labels), self.cfg.champion.margin)
        if d.promoted:
            self.state.model_recorded(version, cid, d.new_score, "champion", d.reason)
            self.promote(version, d.reason)
        else:
            self.state.model_recorded(version, cid, d.new_score, "rejected", d.reason)
        log.info("champion_gate", version=version, promoted=d.promoted, new_score=d.new_score,
                 champion=d.champion_version, champion_score=d.champion_score, reason=d.reason)

    def promote(self, version: int, reason: str) -> None:
        old = self.state.champion()
        if old is not None and old != version:
            self.state.set_model_status(old, "retired", f"replaced by v{version}")
        self.state.set_model_status(version, "champion", reason)
        self.state.set_champion(version)
        self.state.deployment_queued(version)
        self.deployer.wake.set()

    # -- commands from fedctl ------------------------------------------------------------------
    def handle_commands(self) -> None:
        for cmd in self.state.commands_pending():
            ok, result = True, ""
            try:
                result = self._command(cmd["kind"], cmd["arg"])
            except (ValueError, KeyError) as exc:
                ok, result = False, str(exc)
            self.state.command_done(cmd["id"], ok, result)
            self.log.info("command", kind=cmd["kind"], arg=cmd["arg"], ok=ok, result=result)

    def _command(self, kind: str, arg: str | None) -> str:
        if kind == "run-now":
            if self.campaign and self.campaign.is_alive():
                raise ValueError("a campaign is already running")
            return f"started campaign {self.start_campaign('run-now', None)}"
        versions = self.registry.versions()
        if kind in ("promote", "deploy"):
            version = int(arg)
            if version not in versions:
                raise ValueError(f"no registered model v{version}")
            if kind == "promote":
                if self.state.champion() == version:
                    raise ValueError(f"v{version} is already the champion")
                if version not in {m["version"] for m in self.state.models()}:
                    self.state.model_recorded(version, None, None, "candidate", "")
                self.promote(version, "promoted by hand (fedctl promote)")
                return f"v{version} is the champion; deploy queued"
            self.state.deployment_queued(version)
            self.deployer.wake.set()
            return f"deploy of v{version} queued"
        if kind == "rollback":
            champion = self.state.champion()
            history = [m["version"] for m in self.state.models()
                       if m["status"] == "retired" and m["version"] != champion]
            if champion is None or not history:
                raise ValueError("no earlier champion to roll back to")
            target = max(history)
            self.state.set_model_status(champion, "rolled-back", f"rolled back to v{target}")
            self.state.set_champion(None)
            self.promote(target, f"rollback from v{champion} (fedctl rollback)")
            return f"v{target} is the champion again; deploy queued"
        raise ValueError(f"unknown command {kind!r}")

    # -- main loop -----------------------------------------------------------------------------
    def status_line(self) -> str:
        running = self.state.running_campaign()
        champ = self.state.champion()
        nxt = self.scheduler.next_fire_time(datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
        online = sum(1 for agent in fleet_view(self.state, self.cfg.api.online_after_seconds) if agent.online)
        return (f"{'campaign ' + running['id'] if running else 'idle'}; {online} agent(s) reporting; "
                f"champion {'v' + str(champ) if champ else 'none'}; next campaign {nxt}")

    def tick(self) -> None:
        if self.link.proc is not None and self.link.proc.poll() is not None:
            self.link_restarts += 1
            self.log.error("superlink_exited", code=self.link.proc.returncode, restarts=self.link_restarts)
            self.link.start()
        self.handle_commands()
        running = self.campaign is not None and self.campaign.is_alive()
        now = datetime.now(timezone.utc)
        decision = self.scheduler.decide(now, self.agents_online() if not running else 0, running)
        if decision.action == "start":
            self.scheduler.mark_started(decision.slot)
            cid = self.start_campaign("catch-up" if decision.catch_up else "schedule", decision.slot)
            self.log.info("campaign_scheduled", campaign=cid, reason=decision.reason)
        elif decision.action == "skip":
            cid = new_campaign_id()
            self.state.campaign_skipped(cid, "schedule", decision.slot.isoformat() if decision.slot else None,
                                        decision.reason)
            self.log.warning("campaign_skipped", campaign=cid, reason=decision.reason)
        self.state.put("scheduler", self.scheduler.state())

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        for cid in self.state.recover():
            self.log.warning("campaign_interrupted", campaign=cid,
                             reason="the coordinator stopped while the campaign ran")
        for name in self.registry.cleanup():
            self.log.warning("partial_model_removed", folder=name)
        self.link.start()
        app = create_app(self.state, max_body=self.cfg.api.max_body_bytes,
                         online_after=self.cfg.api.online_after_seconds, log=self.log,
                         metrics_text=lambda: metrics_text(self.state, self.cfg.api.online_after_seconds))
        server = uvicorn.Server(uvicorn.Config(app, host=self.cfg.api.host, port=self.cfg.api.port,
                                               log_config=None, access_log=False))
        api_thread = threading.Thread(target=server.run, name="api", daemon=True)
        api_thread.start()
        self.deployer.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        self.notify.ready()
        self.log.info("coordinator_ready", superlink=self.link.address,
                      api=f"{self.cfg.api.host}:{self.cfg.api.port}")
        while not self.stop.wait(1.0):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - logged; the loop (and watchdog) go on
                self.log.exception("tick_failed")
            self.notify.status(self.status_line())
            if api_thread.is_alive() and self.deployer.is_alive():
                self.notify.watchdog()
        return self.shutdown(server)

    def shutdown(self, server) -> int:
        self.notify.stopping()
        self.log.info("coordinator_stopping")
        running = self.state.running_campaign()
        if running and running.get("run_id"):
            try:
                self.cli.stop(int(running["run_id"]))
            except (FlwrError, OSError, ValueError):
                pass
        if running:
            self.state.campaign_finished(running["id"], "interrupted",
                                         "the coordinator was stopped during the campaign", None)
        self.deployer.stop_event.set()
        server.should_exit = True
        self.link.stop()
        self.log.info("coordinator_stopped")
        return 0
