"""The real ClientApp with a slow train step, for the no-switch-during-training test (never shipped).

Each train message first leaves `train-started` next to the node's cache folder, waits
SLOW_SECONDS, trains for real, and leaves `train-done` before it replies: the test knows
exactly when a train message is being served.
"""

from __future__ import annotations

import time
from pathlib import Path

from fed_common.node_config import NodeConfig
from fedapp import client_app as real
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

SLOW_SECONDS = 25
app = ClientApp()


@app.query("artifacts")
def artifacts(msg: Message, context: Context) -> Message:
    return real.receive_artifacts(msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    marks = Path(NodeConfig.from_flwr(context.node_config).cache_dir).parent
    (marks / "train-started").write_text(str(time.time()))
    time.sleep(SLOW_SECONDS)
    reply = real.train(msg, context)
    (marks / "train-done").write_text(str(time.time()))
    return reply
