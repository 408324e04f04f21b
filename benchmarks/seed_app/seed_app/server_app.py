"""ServerApp of the seed recipe: server-side Keras init, FedAvg over ALL model weights,
server-side evaluation on the server test photos after every round.

Writes to run config `output-dir`: progress.jsonl, one JSON line per evaluation (round 0 is
the initial model) with the server accuracy and the weight bytes that round moved both ways,
counted on the messages themselves as fedapp's strategy counts them (`len(array.data)`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from seed_recipe import LABELS, build_seed_model, images_and_targets, model_accuracy

app = ServerApp()


def array_bytes(arrays: ArrayRecord) -> int:
    return sum(len(arr.data) for arr in arrays.values())


class CountingFedAvg(FedAvg):
    """Flower's FedAvg, plus the bytes of every ArrayRecord sent and received per round."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.down: dict[int, int] = {}
        self.up: dict[int, int] = {}
        self.replies: dict[int, int] = {}

    def configure_train(self, server_round, arrays, config, grid):
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.down[server_round] = sum(array_bytes(m.content["arrays"]) for m in messages)
        return messages

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        self.up[server_round] = sum(array_bytes(m.content["arrays"]) for m in ok)
        self.replies[server_round] = len(ok)
        return super().aggregate_train(server_round, replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    out = Path(str(cfg["output-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    from fedapp.images import scan_folder

    x_test, y_test = images_and_targets(scan_folder(str(cfg["server-test-dir"]), LABELS))
    model = build_seed_model(str(cfg["weights"]), seed=int(cfg["seed"]))
    nodes = int(cfg["min-nodes"])
    strategy = CountingFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=nodes,
                              min_available_nodes=nodes)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.set_weights(arrays.to_numpy_ndarrays())
        acc = model_accuracy(model, x_test, y_test)
        line = {"round": server_round, "time": time.time(), "server_accuracy": acc,
                "bytes_down": strategy.down.get(server_round, 0),
                "bytes_up": strategy.up.get(server_round, 0),
                "replies": strategy.replies.get(server_round, 0)}
        with open(out / "progress.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        return MetricRecord({"accuracy": acc})

    train_config = ConfigRecord({"local-epochs": int(cfg["local-epochs"]),
                                 "batch-size": int(cfg["batch-size"]), "weights": str(cfg["weights"])})
    strategy.start(grid=grid, initial_arrays=ArrayRecord(model.get_weights()),
                   num_rounds=int(cfg["num-server-rounds"]), train_config=train_config,
                   evaluate_fn=evaluate)
    with open(out / "progress.jsonl", "a") as f:
        f.write(json.dumps({"event": "completed", "time": time.time()}) + "\n")
