"""The real ClientApp with a slow train step, for the no-switch-during-training test (never shipped).

Each train message first leaves `train-started` next to the node's cache folder, waits
SLOW_SECONDS, trains for real, and leaves `train-done` before it replies: the test knows
exactly when a train message is being served. A train message that finds the artifacts
missing (round 1 on a new node: they come next, then the message again) is answered at once.
"""

from __future__ import annotations

import time
from pathlib import Path

from fed_common.node_config import NodeConfig
from fedapp import client_app as real
from fedapp.artifacts import ArtifactStore
from fedapp.run_config import TrainConfig
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

SLOW_SECONDS = 25
app = ClientApp()


@app.query("artifacts")
def artifacts(msg: Message, context: Context) -> Message:
    return real.receive_artifacts(msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    node = NodeConfig.from_flwr(context.node_config)
    if not ArtifactStore(node.cache_dir).has(TrainConfig.from_record(msg.content["config"]).trainer_sha):
        return real.train(msg, context)  # round 1 on a new node: "missing", nothing trained yet
    marks = Path(node.cache_dir).parent
    (marks / "train-started").write_text(str(time.time()))
    time.sleep(SLOW_SECONDS)
    reply = real.train(msg, context)
    (marks / "train-done").write_text(str(time.time()))
    return reply
