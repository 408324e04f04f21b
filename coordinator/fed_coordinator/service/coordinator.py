"""fed-coordinator: the long-running server service.

One process owns: the flower-superlink child, the fleet API (uvicorn thread), the scheduler
(decided in the main loop), one campaign at a time (service.campaign_worker), fedctl's
command queue (service.commands), the champion policy (models.policy) and the deploy queue
(deploy.worker). The main loop never blocks on any of them, so WATCHDOG=1 means "the loop
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

from fed_coordinator.api.app import create_app
from fed_coordinator.api.clock_view import clock_status_text
from fed_coordinator.api.fleet import fleet_view
from fed_coordinator.api.metrics import metrics_text
from fed_coordinator.campaigns.runner import FEDAPP_DIR, CampaignRunner, new_campaign_id
from fed_coordinator.campaigns.schedule import ScheduleConfig, Scheduler
from fed_coordinator.deploy.worker import DeployWorker
from fed_coordinator.flower import FlwrCli, FlwrError, SuperLink
from fed_coordinator.models.policy import ChampionPolicy
from fed_coordinator.models.registry import ModelRegistry
from fed_coordinator.service.campaign_worker import CampaignWorker
from fed_coordinator.service.commands import CommandHandler
from fed_coordinator.state import State
from fed_coordinator.models.channel import ModelChannel
from fed_coordinator.models.manifest import SigningKeyError
from fed_coordinator.models.rollout import Stage
from fed_coordinator.models.rollout_engine import RolloutEngine

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
        self.scheduler = self._scheduler(ScheduleConfig(**cfg.schedule.model_dump()))
        self.deployer = DeployWorker(self.state, self.registry, cfg.edge_impulse, log)
        self.policy = ChampionPolicy(self.state, self.registry, Path(cfg.campaign.server_data_dir) / "test",
                                     list(cfg.campaign.labels), cfg.champion,
                                     deploy_queued=self.deployer.wake.set)
        runner = CampaignRunner(root, self.cli, self.registry, log, app_dir=Path(app_dir))
        self.campaigns = CampaignWorker(runner, self.state, self.policy, cfg.campaign,
                                        superlink_restarts=lambda: self.link_restarts, log=log)
        self.rollout = RolloutEngine(self.state, cfg.rollout, cfg.api.online_after_seconds, log)
        self.commands = CommandHandler(self.state, self.policy, self.campaigns, log, rollout=self.rollout)
        self.channel = self._model_channel()
        self.stop = threading.Event()
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

    # -- what the main loop asks ---------------------------------------------------------------
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

    # -- main loop -----------------------------------------------------------------------------
    def status_line(self) -> str:
        running = self.state.running_campaign()
        champ = self.state.champion()
        nxt = self.scheduler.next_fire_time(datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
        fleet = fleet_view(self.state, self.cfg.api.online_after_seconds)
        online = sum(1 for agent in fleet if agent.online)
        return (f"{'campaign ' + running['id'] if running else 'idle'}; {online} agent(s) reporting; "
                f"champion {'v' + str(champ) if champ else 'none'}{self._rollout_status()}; next campaign {nxt}"
                + clock_status_text(fleet))

    def _rollout_status(self) -> str:
        """`, rollout v3 canary (pi-cam-01)`, `, rollout v3 halted`, `PAUSED`: for systemctl status."""
        rollout = self.rollout.record.current() if self.channel is not None else None
        if rollout is None:
            return ""
        text = f", rollout v{rollout.version} {rollout.stage.value}"
        if rollout.stage is Stage.CANARY:
            text += f" ({', '.join(rollout.canaries)})"
        return text + (" PAUSED" if self.rollout.record.paused() else "")

    def tick(self) -> None:
        if self.link.proc is not None and self.link.proc.poll() is not None:
            self.link_restarts += 1
            self.log.error("superlink_exited", code=self.link.proc.returncode, restarts=self.link_restarts)
            self.link.start()
        self.commands.handle_pending()
        if self.channel is not None:  # without a signing key no Pi fetches models: nothing to roll out
            self.rollout.tick()
        running = self.campaigns.running()
        now = datetime.now(timezone.utc)
        decision = self.scheduler.decide(now, self.agents_online() if not running else 0, running)
        if decision.action == "start":
            self.scheduler.mark_started(decision.slot)
            cid = self.campaigns.start("catch-up" if decision.catch_up else "schedule", decision.slot)
            self.log.info("campaign_scheduled", campaign=cid, reason=decision.reason)
        elif decision.action == "skip":
            cid = new_campaign_id()
            self.state.campaign_skipped(cid, "schedule", decision.slot.isoformat() if decision.slot else None,
                                        decision.reason)
            self.log.warning("campaign_skipped", campaign=cid, reason=decision.reason)
        self.state.put("scheduler", self.scheduler.state())

    def _model_channel(self) -> ModelChannel | None:
        """The champion channel for the Pis, when a manifest signing key is configured."""
        key_file = self.cfg.rollout.signing_key_file
        if key_file is None:
            return None
        try:
            return ModelChannel(self.rollout.record, self.registry, key_file, self.cfg.rollout.model_kind)
        except SigningKeyError as exc:
            raise SystemExit(f"fed-coordinator: {exc} (rollout.signing_key_file)") from None

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
                         metrics_text=lambda: metrics_text(self.state, self.cfg.api.online_after_seconds,
                                                           self.cfg.monitoring),
                         channel=self.channel, monitoring=self.cfg.monitoring)
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
