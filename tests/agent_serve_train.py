"""Run by test_agent_without_tensorflow.py with the AGENT venv's python.

Blocks any import of TensorFlow/Keras, then serves a real artifacts message and a real train
message through the fedapp ClientApp object (Flower's own routing), with the node-config the
agent writes (NodeConfig, parsed as flower-supernode parses it), and prints a JSON summary.
"""

import json
import sys
from pathlib import Path


class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "tensorflow_cpu"):
            raise ImportError(f"{name} is blocked on the agent")
        return None


sys.meta_path.insert(0, BlockTensorFlow())
fedapp_dir, data_dir, cache_dir, backbone, trainer = sys.argv[1:6]  # [weights.npz]
sys.path.insert(0, fedapp_dir)

import numpy as np  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.common.config import parse_config_args  # noqa: E402

from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from fed_common.files import sha256_file  # noqa: E402
from fed_common.node_config import LastTraining, NodeConfig  # noqa: E402
from fedapp.client_app import app  # noqa: E402
from fedapp.head import init_head  # noqa: E402
from fedapp.run_config import TrainConfig  # noqa: E402
from fedapp.tflite import backend  # noqa: E402

# What flwr-clientapp sets for the task it serves (the message's ids come from it).
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 42, 1
status_file = str(Path(cache_dir).parent / "last_training.json")
node = NodeConfig(data_dir=data_dir, cache_dir=cache_dir, agent_name="pi-test", status_file=status_file)
# the agent's --node-config string, parsed the way flower-supernode parses it
node_config = parse_config_args([node.to_flwr()])
context = Context(run_id=7, node_id=42, node_config=node_config, state=RecordDict(), run_config={})
shas = {"backbone": sha256_file(backbone), "trainer": sha256_file(trainer)}
offer = ConfigRecord({"backbone-sha": shas["backbone"], "trainer-sha": shas["trainer"],
                      "backbone-bytes": open(backbone, "rb").read(),
                      "trainer-bytes": open(trainer, "rb").read()})
start = init_head(0)
config = ConfigRecord(TrainConfig(
    labels=["head", "hardhat"], local_epochs=2, batch_size=8, learning_rate=0.01, momentum=0.9,
    seed=0, campaign="c-test", backbone_sha=shas["backbone"], trainer_sha=shas["trainer"],
    server_round=1).to_record())


def train_message() -> Message:
    return Message(RecordDict({"arrays": ArrayRecord(start), "config": config}), 42, "train")


# round 1's train message reaches a node without the artifacts: it says which it lacks
before = app(train_message(), context).content.config_records
missing_before = sorted(str(before["missing"]["missing"]).split(",")) if "missing" in before else None
query = Message(RecordDict({"artifacts": offer}), 42, "query.artifacts")
missing = str(app(query, context).content["artifacts"]["missing"])
reply = app(train_message(), context)
weights = reply.content["arrays"].to_numpy_ndarrays()
if len(sys.argv) > 6:  # where to keep the trained weights (comparing backends, platforms)
    np.savez(sys.argv[6], *weights)
print(json.dumps({
    "interpreter": backend(),
    "missing_before_ship": missing_before,
    "missing_after_ship": missing,
    "shapes": [list(w.shape) for w in weights],
    "changed": bool(any(not np.array_equal(a, b) for a, b in zip(weights, start))),
    "metrics": dict(reply.content["metrics"]),
    "skipped": str(reply.content["info"]["skipped"]),
    "last_training": last.model_dump() if (last := LastTraining.read(status_file)) else None,
    "tensorflow_loaded": any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules),
}))
