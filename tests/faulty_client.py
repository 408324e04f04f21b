"""A ClientApp that misbehaves on purpose, for the aggregation tests (never shipped).

It wraps the real fedapp ClientApp, so every node trains for real through Flower; an agent
whose name starts with "evil" then corrupts its reply. Which fault depends on the campaign
id the ServerApp passes in TrainConfig.campaign: a "faults-*" campaign walks FAULTS, one per
round; a "boost-*" campaign sends a boosted label flip every round (the trained head with
its two output classes swapped, times 100: a model-replacement attack that FedAvg follows);
a "scale-*" campaign sends the trained head times 100 (for comparison: see the test).
The test builds a Flower App from fedapp's pyproject.toml with this module as the ClientApp.
"""

from __future__ import annotations

import numpy as np
from fed_common.node_config import NodeConfig
from fedapp import client_app as real
from fedapp.run_config import TrainConfig
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()

# fault -> words the ServerApp's recorded reason must contain
FAULTS = {
    "nan": "non-finite",
    "inf": "non-finite",
    "shape": "'b1' is float32[3], sent float32[2]",
    "dtype": "'w0' is float64",
    "missing-array": "array names",
    "no-metrics": "no MetricRecord 'metrics'",
    "examples-0": "'num-examples' = 0 is outside",
    "examples-negative": "'num-examples' = -5 is outside",
    "examples-huge": "'num-examples' = 1000000000000 is outside",
    # under the cap, but more than the labels it says it trained on give
    "examples-inflated": "'num-examples' = 5000 does not match",
}


@app.query("artifacts")
def artifacts(msg: Message, context: Context) -> Message:
    return real.receive_artifacts(msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    reply = real.train(msg, context)
    if not NodeConfig.from_flwr(context.node_config).agent_name.startswith("evil"):
        return reply
    if "arrays" not in reply.content.array_records:  # "missing": round 1 ships the artifacts first
        return reply
    cfg = TrainConfig.from_record(msg.content["config"])
    names = list(FAULTS)
    by_prefix = {"boost": "boost-flip", "scale": "scale"}
    fault = by_prefix.get(cfg.campaign.split("-")[0]) or names[(cfg.server_round - 1) % len(names)]
    return Message(corrupt(reply.content, fault), reply_to=msg)


def corrupt(content: RecordDict, fault: str) -> RecordDict:
    arrays = {name: arr.numpy() for name, arr in content["arrays"].items()}
    metrics = MetricRecord(dict(content["metrics"]))
    if fault in ("nan", "inf"):
        arrays["w0"][0, 0] = np.nan if fault == "nan" else np.inf
    elif fault == "shape":
        arrays["b1"] = np.append(arrays["b1"], np.float32(0))
    elif fault == "dtype":
        arrays["w0"] = arrays["w0"].astype(np.float64)
    elif fault == "missing-array":
        del arrays["b0"]
    elif fault.startswith("examples-"):
        metrics["num-examples"] = {"examples-0": 0, "examples-negative": -5, "examples-huge": 10**12,
                                   "examples-inflated": 5000}[fault]
    elif fault in ("boost-flip", "scale"):
        if fault == "boost-flip":
            arrays["w1"], arrays["b1"] = arrays["w1"][:, ::-1], arrays["b1"][::-1]
        arrays = {name: np.ascontiguousarray(value * np.float32(100)) for name, value in arrays.items()}
    out = RecordDict({"arrays": ArrayRecord({n: Array(np.ascontiguousarray(v)) for n, v in arrays.items()}),
                      "info": content["info"]})
    if fault != "no-metrics":
        out["metrics"] = metrics
    return out

