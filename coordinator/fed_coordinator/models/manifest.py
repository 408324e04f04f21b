"""The signed manifest of a registered model, as the Pis get it (fed_common.manifest).

Why here: the registry knows each version's files, hashes and labels; the signing key
(Ed25519, made by the PKI role, 0600, only the service user reads it) turns that into
something a Pi can check without trusting the network or nginx. The calibration fitted at
registration (models.calibration) goes in the manifest, so each Pi's confidences are
calibrated for the very file it runs.
"""

from __future__ import annotations

import calendar
import stat
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fed_common.manifest import Calibration, ModelFile, ModelManifest, SignedManifest, sign

from fed_coordinator.models.calibration import manifest_calibration
from fed_coordinator.models.registry import ModelRegistry

KINDS = {"int8": "model_int8.tflite", "float32": "model_float32.tflite"}


class SigningKeyError(ValueError):
    """The manifest signing key cannot be used; the message names the file and why."""


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        mode = path.stat().st_mode
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"manifest signing key {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(f"manifest signing key {path}: mode {oct(stat.S_IMODE(mode))}, must be 0600")
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"manifest signing key {path}: not an Ed25519 key")
    return key


def model_manifest(registry: ModelRegistry, version: int, kind: str = "int8") -> ModelManifest:
    """The version's manifest for one file kind, with that file's own calibration if fitted."""
    meta = registry.metadata(version)
    calibration = manifest_calibration(meta, kind)
    name = KINDS[kind]
    entry = meta["files"][name]
    created = calendar.timegm(time.strptime(meta["created"], "%Y-%m-%dT%H:%M:%SZ"))
    return ModelManifest(version=version, labels=meta["labels"], campaign_id=meta.get("campaign_id"),
                         created_at=float(created),
                         file=ModelFile(name=name, kind=kind, size=entry["bytes"], sha256=entry["sha256"]),
                         calibration=Calibration(**calibration) if calibration else None)


def signed_manifest(registry: ModelRegistry, version: int, key: Ed25519PrivateKey,
                    kind: str = "int8") -> SignedManifest:
    return sign(model_manifest(registry, version, kind), key)
