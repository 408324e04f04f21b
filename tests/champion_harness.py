"""A real trained champion, made with the project's own code paths, for tests and benchmarks.

Why: what the agent runs must be judged on a model that learned something, not on a toy
graph. So a campaign is replayed in-process with the pieces a real one uses: the ServerApp's
seeded `init_head`, each client's TFLite backbone embeddings (`EmbeddingCache`) and TFLite
head trainer (`HeadTrainer.fit`, as the ClientApp calls it), FedAvg with
`fedapp.aggregation.aggregate`, then registration with `build_final_model` into a
`ModelRegistry` (Keras, TFLite float32 and int8 quantized with the server test photos, each
with its temperature scaling fitted on the server folder's calibration part, as the campaign
runner does), and the signed manifest the coordinator serves. Only the Flower
transport is left out. Needs the coordinator venv (TensorFlow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import PHOTOS, WEIGHTS

CLIENTS = ("dataset_client1", "dataset_client2")
SERVER_TEST = PHOTOS / "dataset_server" / "test"


def federated_head(artifacts: Path, cache_dir: Path, settings, clients=CLIENTS) -> list[np.ndarray]:
    """`settings.rounds` FedAvg rounds of local training on each client's train photos."""
    from fed_common.files import sha256_file
    from fedapp.aggregation import Aggregation, CheckedReply, aggregate
    from fedapp.embeddings import EmbeddingCache
    from fedapp.head import WEIGHT_NAMES, HeadTrainer, init_head
    from fedapp.images import scan_folder

    backbone = artifacts / "backbone.tflite"
    cache = EmbeddingCache(cache_dir, backbone, sha256_file(backbone))
    data = [cache.matrix(scan_folder(PHOTOS / client / "train", settings.labels).files) for client in clients]
    weights = init_head(settings.seed, classes=len(settings.labels))
    for server_round in range(1, settings.rounds + 1):
        replies = []
        for x, y in data:
            trainer = HeadTrainer(str(artifacts / "trainer.tflite"))
            trainer.set_weights(weights)
            trainer.fit(x, y, epochs=settings.local_epochs, batch_size=settings.batch_size,
                        lr=settings.learning_rate, momentum=settings.momentum,
                        seed=settings.seed * 1000 + server_round)
            replies.append(CheckedReply(dict(zip(WEIGHT_NAMES, trainer.get_weights())), len(y), {}))
        weights = aggregate(replies, Aggregation(settings.aggregation))[0].to_numpy_ndarrays()
    return weights


def register_champion(registry_root: Path, head: list[np.ndarray], labels: list[str]):
    """Register the head as the campaign runner does; returns (registry, version)."""
    from fedapp.images import load_image, scan_folder

    from fed_coordinator.models.artifacts import build_final_model
    from fed_coordinator.models.registry import ModelRegistry

    calibration = [load_image(f.path) for f in scan_folder(SERVER_TEST, labels).files[:100]]
    registry = ModelRegistry(registry_root)
    version, _ = registry.register(
        lambda folder: build_final_model(folder, str(WEIGHTS), head, labels, calibration, SERVER_TEST))
    return registry, version


def build_champion(work: Path, artifacts: Path, **overrides):
    """Train and register a champion under `work`; returns (registry, version).

    `artifacts` holds backbone.tflite and trainer.tflite (export_agent_artifacts); the
    campaign's shape is RunSettings' defaults unless overridden."""
    from fedapp.run_config import RunSettings

    settings = RunSettings(**overrides)
    head = federated_head(artifacts, work / "embeddings", settings)
    return register_champion(work / "models", head, settings.labels)


def install_on_agent(registry, version: int, state_dir: Path, kind: str = "int8"):
    """Sign the version's manifest and install it with the agent's ModelStore (self-tested)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fed_agent.model_store import ModelStore
    from fed_coordinator.models.manifest import KINDS, signed_manifest

    key = Ed25519PrivateKey.generate()
    body = signed_manifest(registry, version, key, kind).model_dump_json().encode()
    data = (registry.path(version) / KINDS[kind]).read_bytes()
    return ModelStore(state_dir / "models", key.public_key()).install(body, data)
