"""ClientApp of the seed recipe: Keras fit of the whole model on the node's own photos.

The photos come from the same node config the SuperNodes give fedapp (`data-dir`, its
train/<label>/ folders). Each epoch runs the frozen MobileNetV2 backbone on every image, as
the seed did; the whole model goes back, with `num-examples` for FedAvg's weighting.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from seed_recipe import LABELS, build_seed_model, images_and_targets

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    from fedapp.images import scan_folder

    config = msg.content["config"]
    x, y = images_and_targets(scan_folder(Path(str(context.node_config["data-dir"])) / "train", LABELS))
    model = build_seed_model(str(config["weights"]))
    model.set_weights(msg.content["arrays"].to_numpy_ndarrays())
    history = model.fit(x, y, epochs=int(config["local-epochs"]), batch_size=int(config["batch-size"]),
                        verbose=0)
    metrics = MetricRecord({"num-examples": len(x), "train-loss": float(history.history["loss"][-1])})
    return Message(RecordDict({"arrays": ArrayRecord(model.get_weights()), "metrics": metrics}),
                   reply_to=msg)
