"""The coordinator's state in SQLite: campaigns, rounds, agents, models, deployments, rollouts,
field summaries.

Why SQLite with WAL and synchronous=FULL: one writer process, readers from API threads, and
a power cut must leave the last committed transaction intact. The schema is versioned with
PRAGMA user_version; MIGRATIONS[i] brings version i to i+1 inside one transaction. At start
`recover()` makes the state honest after a crash: a campaign still marked running was
interrupted, and a deploy still marked running goes back to pending.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Sequence

MIGRATIONS = [
    """
    CREATE TABLE campaigns (
        id TEXT PRIMARY KEY, trigger TEXT NOT NULL, slot TEXT, status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '', run_id TEXT, attempt INTEGER NOT NULL DEFAULT 1,
        started_at REAL NOT NULL, finished_at REAL, model_version INTEGER);
    CREATE INDEX campaigns_started ON campaigns(started_at);
    CREATE TABLE rounds (
        campaign_id TEXT NOT NULL REFERENCES campaigns(id), round INTEGER NOT NULL,
        server_accuracy REAL, server_loss REAL, participants INTEGER, bytes_down INTEGER,
        bytes_up INTEGER, time REAL, PRIMARY KEY (campaign_id, round));
    CREATE TABLE agents (
        name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL, created_at REAL NOT NULL,
        last_heartbeat REAL, last_payload TEXT, address TEXT);
    CREATE TABLE models (
        version INTEGER PRIMARY KEY, campaign_id TEXT, created_at REAL NOT NULL,
        score REAL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '');
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT, model_version INTEGER NOT NULL,
        status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,
        last_error TEXT NOT NULL DEFAULT '', result TEXT, created_at REAL NOT NULL,
        updated_at REAL NOT NULL);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE commands (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, arg TEXT,
        created_at REAL NOT NULL, done_at REAL, ok INTEGER, result TEXT);
    """,
    # 2: who failed each round and why (reply rejected, error), as the ServerApp recorded it
    """
    ALTER TABLE rounds ADD COLUMN failures TEXT NOT NULL DEFAULT '[]';
    """,
    # 3: the staged rollout of each champion to the Pis, and versions pinned per agent
    """
    CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, version INTEGER NOT NULL, previous INTEGER,
        stage TEXT NOT NULL, canaries TEXT NOT NULL DEFAULT '[]', reason TEXT NOT NULL DEFAULT '',
        started_at REAL NOT NULL, canary_ok_since REAL, finished_at REAL);
    CREATE TABLE pins (agent TEXT PRIMARY KEY, version INTEGER NOT NULL, created_at REAL NOT NULL);
    """,
    # 4: what each agent's running model saw in the field: one row per heartbeat whose field
    # summary counted new images (api.field_history writes, reads and prunes it)
    """
    CREATE TABLE field_summaries (
        id INTEGER PRIMARY KEY AUTOINCREMENT, agent TEXT NOT NULL, received_at REAL NOT NULL,
        model_version INTEGER, images INTEGER NOT NULL, low_confidence_images INTEGER NOT NULL,
        low_confidence REAL NOT NULL, confidence_sum REAL, labeled INTEGER NOT NULL,
        correct INTEGER NOT NULL, predicted TEXT NOT NULL DEFAULT '{}');
    CREATE INDEX field_summaries_agent ON field_summaries(agent, received_at);
    CREATE INDEX field_summaries_received ON field_summaries(received_at);
    """,
    # 5: per agent, what each round trained on: FedAvg's example count, human and pseudo labels
    """
    ALTER TABLE rounds ADD COLUMN agents TEXT NOT NULL DEFAULT '[]';
    """,
    "ALTER TABLE rounds ADD COLUMN declines TEXT NOT NULL DEFAULT '[]';",  # 6: who declined a round, why
]
SCHEMA_VERSION = len(MIGRATIONS)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class StateError(RuntimeError):
    pass


class State:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self.migrate()

    # -- plumbing ----------------------------------------------------------------------
    def _tx(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        return self._tx_all([(sql, args)])

    def _tx_all(self, statements: Sequence[tuple[str, tuple]]) -> sqlite3.Cursor:
        """Every statement or none, in one transaction; returns the last one's cursor."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    cur = self._db.execute(sql, args)
                self._db.execute("COMMIT")
                return cur
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _all(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    # The tables of a concern that keeps its own queries (models.rollout) go through these two.
    def execute(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        """One statement in its own transaction."""
        return self._tx(sql, args)

    def query(self, sql: str, args: tuple = ()) -> list[dict]:
        return self._all(sql, args)

    def migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(f"{self.path}: schema version {version} is newer than this "
                                 f"coordinator understands ({SCHEMA_VERSION}); upgrade it")
            for target in range(version, SCHEMA_VERSION):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in MIGRATIONS[target].split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {target + 1}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    # -- crash recovery ------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Mark what a crash left half-done; returns the ids of interrupted campaigns."""
        running = [r["id"] for r in self._all("SELECT id FROM campaigns WHERE status='running'")]
        now = time.time()
        for cid in running:
            self._tx("UPDATE campaigns SET status='interrupted', finished_at=?, "
                     "reason='the coordinator stopped while the campaign ran' WHERE id=?", (now, cid))
        self._tx("UPDATE deployments SET status='pending', updated_at=? WHERE status='running'", (now,))
        return running

    # -- key/value -------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        rows = self._all("SELECT value FROM kv WHERE key=?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def put(self, key: str, value: Any) -> None:
        self._tx("INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET "
                 "value=excluded.value", (key, json.dumps(value)))

    # -- campaigns -------------------------------------------------------------------------
    def campaign_started(self, cid: str, trigger: str, slot: str | None, attempt: int = 1) -> None:
        self._tx("INSERT INTO campaigns(id, trigger, slot, status, attempt, started_at) "
                 "VALUES(?, ?, ?, 'running', ?, ?)", (cid, trigger, slot, attempt, time.time()))

    def campaign_run_id(self, cid: str, run_id: int | None) -> None:
        self._tx("UPDATE campaigns SET run_id=? WHERE id=?", (str(run_id), cid))

    def campaign_finished(self, cid: str, status: str, reason: str, model_version: int | None) -> None:
        self._tx("UPDATE campaigns SET status=?, reason=?, finished_at=?, model_version=? "
                 "WHERE id=?", (status, reason, time.time(), model_version, cid))

    def campaign_skipped(self, cid: str, trigger: str, slot: str | None, reason: str) -> None:
        now = time.time()
        self._tx("INSERT INTO campaigns(id, trigger, slot, status, reason, started_at, finished_at) "
                 "VALUES(?, ?, ?, 'skipped', ?, ?, ?)", (cid, trigger, slot, reason, now, now))

    def round_recorded(self, cid: str, event: dict) -> None:
        """A round event (fedapp.progress.RoundEvent's JSON); per agent `agents` keeps the
        example count and the human and pseudo labels it trained on (None: not reported)."""
        agents = [{"agent": p.get("agent"), "examples": p.get("num-examples"), "human": p.get("human-examples"),
                   "pseudo": p.get("pseudo-examples")} for p in event.get("participants", [])]
        self._tx("INSERT OR REPLACE INTO rounds(campaign_id, round, server_accuracy, server_loss, participants, "
                 "bytes_down, bytes_up, time, failures, agents, declines) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                     cid, event["round"], event.get("server_accuracy"), event.get("server_loss"),
                     len(event.get("participants", [])), event.get("bytes_down_per_agent"),
                     event.get("bytes_up_per_agent"), event.get("time"),
                     json.dumps(event.get("failures", [])), json.dumps(agents),
                     json.dumps(event.get("declines") or [])))

    def campaigns(self, limit: int = 50) -> list[dict]:
        rows = self._all("SELECT * FROM campaigns ORDER BY started_at DESC LIMIT ?", (limit,))
        for row in rows:
            row["rounds"] = self._all("SELECT * FROM rounds WHERE campaign_id=? ORDER BY round",
                                      (row["id"],))
            for rnd in row["rounds"]:
                rnd["failures"] = json.loads(rnd["failures"] or "[]")
                rnd["agents"] = json.loads(rnd["agents"] or "[]")
                rnd["declines"] = json.loads(rnd["declines"] or "[]")
        return rows

    def running_campaign(self) -> dict | None:
        rows = self._all("SELECT * FROM campaigns WHERE status='running'")
        return rows[0] if rows else None

    # -- agents ------------------------------------------------------------------------------
    def add_agent(self, name: str, token: str | None = None) -> str:
        """Register an agent (or replace its token); returns the token, shown once."""
        token = token or secrets.token_urlsafe(32)
        self._tx("INSERT INTO agents(name, token_sha256, created_at) VALUES(?, ?, ?) "
                 "ON CONFLICT(name) DO UPDATE SET token_sha256=excluded.token_sha256",
                 (name, token_digest(token), time.time()))
        return token

    def agent_for_token(self, token: str) -> str | None:
        digest = token_digest(token)
        for row in self._all("SELECT name, token_sha256 FROM agents"):
            if secrets.compare_digest(row["token_sha256"], digest):
                return row["name"]
        return None

    def heartbeat(self, name: str, payload_json: str, address: str,
                  also: Sequence[tuple[str, tuple]] = ()) -> None:
        """Store a heartbeat the API has validated (as its JSON text). `also` commits with it
        or not at all: the field history's row for the summary it carried, since the agent
        sends those counts again unless the heartbeat was taken (api.field_history)."""
        self._tx_all([("UPDATE agents SET last_heartbeat=?, last_payload=?, address=? WHERE name=?",
                       (time.time(), payload_json, address, name)), *also])

    def agents(self) -> list[dict]:
        """Agents with their last heartbeat as stored JSON text (fleet.fleet_view parses it)."""
        return self._all("SELECT name, created_at, last_heartbeat, last_payload, address "
                         "FROM agents ORDER BY name")

    # -- models and the champion ----------------------------------------------------------
    def model_recorded(self, version: int, campaign_id: str | None, score: float | None,
                       status: str, reason: str) -> None:
        self._tx("INSERT OR REPLACE INTO models VALUES(?, ?, ?, ?, ?, ?)",
                 (version, campaign_id, time.time(), score, status, reason))

    def set_model_status(self, version: int, status: str, reason: str) -> None:
        self._tx("UPDATE models SET status=?, reason=? WHERE version=?", (status, reason, version))

    def models(self) -> list[dict]:
        return self._all("SELECT * FROM models ORDER BY version DESC")

    def champion(self) -> int | None:
        return self.get("champion_version")

    def set_champion(self, version: int | None) -> None:
        self.put("champion_version", version)

    # -- deployments -------------------------------------------------------------------------
    def deployment_queued(self, version: int) -> int:
        now = time.time()
        cur = self._tx("INSERT INTO deployments(model_version, status, next_attempt_at, "
                       "created_at, updated_at) VALUES(?, 'pending', ?, ?, ?)", (version, now, now, now))
        return int(cur.lastrowid)

    def deployment_update(self, dep_id: int, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        if "result" in fields and not isinstance(fields["result"], (str, type(None))):
            fields["result"] = json.dumps(fields["result"])
        cols = ", ".join(f"{k}=?" for k in fields)
        self._tx(f"UPDATE deployments SET {cols} WHERE id=?", (*fields.values(), dep_id))

    def deployments(self, status: str | None = None) -> list[dict]:
        if status:
            return self._all("SELECT * FROM deployments WHERE status=? ORDER BY id", (status,))
        return self._all("SELECT * FROM deployments ORDER BY id DESC")

    # -- commands from fedctl (same host; the service acts on them in its loop) -----------
    def command_add(self, kind: str, arg: str | None = None) -> int:
        cur = self._tx("INSERT INTO commands(kind, arg, created_at) VALUES(?, ?, ?)",
                       (kind, arg, time.time()))
        return int(cur.lastrowid)

    def commands_pending(self) -> list[dict]:
        return self._all("SELECT * FROM commands WHERE done_at IS NULL ORDER BY id")

    def command_done(self, cmd_id: int, ok: bool, result: str) -> None:
        self._tx("UPDATE commands SET done_at=?, ok=?, result=? WHERE id=?",
                 (time.time(), int(ok), result, cmd_id))

    def command(self, cmd_id: int) -> dict | None:
        rows = self._all("SELECT * FROM commands WHERE id=?", (cmd_id,))
        return rows[0] if rows else None
