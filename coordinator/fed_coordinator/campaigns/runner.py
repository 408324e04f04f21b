"""One federated campaign: preflight, exports, submit, watch with a deadline, register.

`flwr run` exits 0 even when a run fails, so the outcome always comes from `flwr ls`; a run
still going at its deadline is stopped with `flwr stop`. The ServerApp reports progress in
progress.jsonl under the campaign folder; we read it as it grows to show each round.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fedapp.progress import event_json, read_progress
from fedapp.run_config import RunConfig

from fed_coordinator.config import CampaignSection
from fed_coordinator.flower import FlwrCli, FlwrError
from fed_coordinator.models.registry import ModelRegistry

FEDAPP_DIR = Path(__file__).resolve().parents[3] / "fedapp"
# `flwr ls` is a CLI process of about 1 CPU second (fleet_scale benchmark: asked every second,
# it took half a core of the 2 a campaign runs on); progress.jsonl says when the run is
# ending, so the status is asked only this often until then, and every second after.
STATUS_POLL_SECONDS = 10.0


class CampaignError(RuntimeError):
    """The campaign cannot start; the message says what is wrong and where."""


@dataclass
class Outcome:
    campaign_id: str
    status: str  # completed | failed | stopped
    reason: str = ""
    run_id: int | None = None
    model_version: int | None = None
    model_path: str | None = None
    rounds: list[dict] = field(default_factory=list)
    skipped_files: dict[str, list] = field(default_factory=dict)
    rounds_run: int | None = None
    converged_round: int | None = None  # early stopping: the last round whose server loss improved


def new_campaign_id() -> str:
    return time.strftime("c%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def preflight(s: CampaignSection) -> Path:
    """Fail at start, with a clear message, on a config that cannot work."""
    from fedapp.images import check_label_folders

    if len(s.labels) < 2 or len(set(s.labels)) != len(s.labels):
        raise CampaignError(f"labels must be at least two distinct names, got {s.labels}")
    test_dir = Path(s.server_data_dir) / "test"
    if not test_dir.is_dir():
        raise CampaignError(f"server test folder not found: {test_dir}")
    try:
        check_label_folders(test_dir, s.labels)
    except ValueError as exc:
        raise CampaignError(str(exc)) from exc
    if s.weights != "imagenet" and not Path(s.weights).is_file():
        raise CampaignError(f"backbone weights file not found: {s.weights}")
    return test_dir


def read_events(path: Path, offset: int) -> tuple[list[dict], int]:
    """The ServerApp's progress events, each validated against fedapp.progress's models (a
    line that does not parse is skipped there), in their JSON form for the state store."""
    events, offset = read_progress(path, offset)
    return [json.loads(event_json(event)) for event in events], offset


class CampaignRunner:
    def __init__(self, state_dir: Path, cli: FlwrCli, registry: ModelRegistry, log,
                 app_dir: Path = FEDAPP_DIR) -> None:
        self.state_dir, self.cli, self.registry, self.log = Path(state_dir), cli, registry, log
        self.app_dir = Path(app_dir).resolve()  # flwr runs from its own home folder

    def run(self, s: CampaignSection, on_event: Callable[[dict], None] = lambda e: None,
            cid: str | None = None) -> Outcome:
        cid = cid or new_campaign_id()
        log = self.log.bind(campaign=cid)
        out = self.state_dir / "campaigns" / cid
        out.mkdir(parents=True)
        outcome = Outcome(cid, "failed")
        try:
            test_dir = preflight(s)
            from fed_coordinator.models.artifacts import export_agent_artifacts

            art = export_agent_artifacts(s.weights, len(s.labels), self.state_dir / "exports")
            run_config = RunConfig(**s.run_settings().model_dump(), artifacts_dir=str(art),
                                   server_test_dir=str(test_dir.resolve()), output_dir=str(out.resolve()))
            outcome.run_id = self.cli.run(self.app_dir, run_config.to_flwr())
            log = log.bind(run=outcome.run_id)
            log.info("campaign_submitted", rounds=s.rounds)
            on_event({"event": "submitted", "run_id": outcome.run_id})
            self._watch(s, out, outcome, on_event, log)
            if outcome.status == "completed":
                self._register(s, out, outcome, log)
        except (CampaignError, FlwrError) as exc:
            outcome.status, outcome.reason = "failed", str(exc)
        (out / "outcome.json").write_text(json.dumps(asdict(outcome), indent=2, default=str))
        log.info("campaign_finished", status=outcome.status, reason=outcome.reason,
                 model_version=outcome.model_version)
        return outcome

    def _watch(self, s: CampaignSection, out: Path, outcome: Outcome, on_event, log) -> None:
        deadline = time.monotonic() + s.deadline_seconds
        offset, status, failure, ending, next_status = 0, "", "", False, 0.0
        while True:
            events, offset = read_events(out / "progress.jsonl", offset)
            ending = ending or any(event["event"] in ("completed", "failed") for event in events)
            for event in events:
                if event["event"] == "round":
                    outcome.rounds.append(event)
                    self._note_skipped(event, outcome, log)
                elif event["event"] == "failed":
                    failure = event.get("reason", "")
                elif event["event"] == "completed":
                    outcome.rounds_run, outcome.converged_round = event["rounds"], event.get("converged_round")
                    outcome.reason = event.get("reason", "")  # "converged at round ..." when it stopped early
                on_event(event)
            if status.startswith("finished"):
                break
            if time.monotonic() > deadline:
                log.warning("campaign_deadline", seconds=s.deadline_seconds)
                self.cli.stop(outcome.run_id)
                outcome.status = "stopped"
                outcome.reason = f"deadline of {s.deadline_seconds:.0f}s reached"
                return
            time.sleep(1.0)
            if not ending and time.monotonic() < next_status:
                continue
            next_status = time.monotonic() + STATUS_POLL_SECONDS
            try:
                info = self.cli.status(outcome.run_id)
            except FlwrError as exc:
                # The SuperLink may be restarting (its state survives in --database); keep
                # polling until the run's real outcome is known or the deadline passes.
                log.warning("superlink_unreachable", error=str(exc)[:300])
                time.sleep(2.0)
                continue
            status = info.get("status", "")
            details = info.get("status-details", "") or ""
        outcome.status = status.split(":", 1)[1] if ":" in status else status
        if outcome.status != "completed":
            outcome.reason = failure or details or f"run ended {status}"
        elif not (out / "head_final.npz").is_file():
            outcome.status, outcome.reason = "failed", "run completed without final head weights"

    @staticmethod
    def _note_skipped(event: dict, outcome: Outcome, log) -> None:
        """Agents skip unusable photos and say which; keep each name once per campaign."""
        for p in event.get("participants", []):
            seen = outcome.skipped_files.setdefault(p["agent"], [])
            for path, reason in p.get("skipped", []):
                if all(path != known for known, _ in seen):
                    seen.append([path, reason])
                    log.warning("agent_skipped_file", agent=p["agent"], file=path, reason=reason)

    def _register(self, s: CampaignSection, out: Path, outcome: Outcome, log) -> None:
        from fedapp.images import load_image, scan_folder

        from fed_coordinator.models.artifacts import build_final_model, load_head

        head = load_head(out / "head_final.npz")
        if not all(np.isfinite(weights).all() for weights in head):
            raise CampaignError("final head weights are not finite (NaN/Inf): not registered")
        calib_scan = scan_folder(Path(s.server_data_dir) / "test", s.labels)
        calibration = [load_image(f.path) for f in calib_scan.files[:100]]
        started = next((e for e in read_events(out / "progress.jsonl", 0)[0]
                        if e["event"] == "started"), {})
        per_round = [r for r in outcome.rounds if r.get("round", 0) > 0]
        shipped = dict(started.get("artifacts", {}).get("shipped_bytes", {}))
        for r in per_round:  # since issue 13 the artifacts go out within round 1
            shipped.update(r.get("shipped_bytes") or {})
        participants = sorted({p["agent"] for r in per_round for p in r.get("participants", [])})
        examples = {p["agent"]: p["num-examples"] for r in per_round for p in r.get("participants", [])}
        # the labels each agent trained on in its last round (None: its ClientApp did not say)
        labels = {p["agent"]: {"human": p.get("human-examples"), "pseudo": p.get("pseudo-examples")}
                  for r in per_round for p in r.get("participants", [])}

        def build(folder: Path) -> dict:
            fields = build_final_model(folder, s.weights, head, s.labels, calibration,
                                       Path(s.server_data_dir) / "test", log)
            return {**fields, "campaign_id": outcome.campaign_id, "run_id": outcome.run_id,
                    "rounds": outcome.rounds, "participants": participants,
                    "example_counts": examples, "label_counts": labels, "skipped_files": outcome.skipped_files,
                    "server_accuracy": per_round[-1]["server_accuracy"] if per_round else None,
                    "bytes_exchanged": {
                        "per_round_per_agent": [
                            {"round": r["round"], "down": r.get("bytes_down_per_agent"),
                             "up": r.get("bytes_up_per_agent")} for r in per_round],
                        "artifacts_shipped": shipped,
                    },
                    "rounds_run": outcome.rounds_run, "converged_round": outcome.converged_round,
                    "settings": s.model_dump(mode="json")}

        outcome.model_version, path = self.registry.register(build)
        outcome.model_path = str(path)
        log.info("model_registered", version=outcome.model_version, path=str(path))
