"""The model manifest: what a Pi should run, signed by the coordinator.

Why signed: the model file reaches every camera through nginx with an agent token; a token
is not proof of who made the model. The coordinator signs each manifest with its Ed25519
key (made by the PKI role; agents get only the public key at provisioning), and an agent
refuses a manifest whose signature does not verify, and a file whose size or SHA-256 differs
from the manifest's. The signature covers the canonical JSON of the manifest (sorted keys,
no spaces), so both sides compute the same bytes whatever the field order.

`calibration` (optional) is the temperature the coordinator fitted on labeled photos the
model was not trained on; the agent applies it to every answer (fedapp.calibration). A
manifest without one serialises without the key at all, so the canonical bytes of every
manifest signed before the field existed are unchanged and its signature still verifies.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Literal, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_serializer

from .config import LABEL_PATTERN
from .files import sha256_bytes

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Label = Annotated[str, StringConstraints(pattern=LABEL_PATTERN, max_length=64)]
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
MAX_MODEL_BYTES = 64 * 1024 * 1024


class ManifestRejected(ValueError):
    """A manifest (or the file it names) an agent must not use; str() is the reason."""


class InputSpec(BaseModel):
    """What the model takes: one RGB image, resized as fedapp.images does, values 0..255."""

    model_config = _STRICT
    height: int = Field(160, ge=16, le=1024)
    width: int = Field(160, ge=16, le=1024)
    channels: Literal[3] = 3
    dtype: Literal["float32"] = "float32"


class ModelFile(BaseModel):
    model_config = _STRICT
    name: FileName
    kind: Literal["int8", "float32"]
    size: int = Field(ge=1, le=MAX_MODEL_BYTES)
    sha256: Sha256


class Calibration(BaseModel):
    """Temperature scaling: the agent reports softmax(log(max(p, probability_floor)) / T)."""

    model_config = _STRICT
    method: Literal["temperature"] = "temperature"
    temperature: float = Field(ge=0.05, le=20)
    probability_floor: float = Field(gt=0, le=0.01, description="what an output of 0 counts as")


class ModelManifest(BaseModel):
    model_config = _STRICT
    schema_version: Literal[1] = 1
    version: int = Field(ge=1)
    file: ModelFile
    labels: list[Label] = Field(min_length=2, max_length=64, description="output order")
    input: InputSpec = Field(default_factory=InputSpec)
    campaign_id: Optional[Annotated[str, StringConstraints(max_length=128)]] = None
    created_at: float = Field(ge=0)
    calibration: Optional[Calibration] = None

    @model_serializer(mode="wrap")
    def _without_missing_calibration(self, handler):
        data = handler(self)
        if isinstance(data, dict) and data.get("calibration") is None:
            data.pop("calibration", None)  # the bytes older manifests were signed over
        return data

    def canonical(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


class SignedManifest(BaseModel):
    model_config = _STRICT
    manifest: ModelManifest
    signature: Annotated[str, StringConstraints(max_length=128)] = Field(description="base64 Ed25519")


def sign(manifest: ModelManifest, key: Ed25519PrivateKey) -> SignedManifest:
    return SignedManifest(manifest=manifest, signature=base64.b64encode(key.sign(manifest.canonical())).decode())


def verified(body: bytes | str, key: Ed25519PublicKey) -> ModelManifest:
    """The manifest from a signed manifest's JSON, or ManifestRejected saying why not."""
    try:
        signed = SignedManifest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ManifestRejected(f"not a valid signed manifest: at '{where}': {first['msg']}") from None
    try:
        signature = base64.b64decode(signed.signature, validate=True)
        key.verify(signature, signed.manifest.canonical())
    except (InvalidSignature, ValueError):
        raise ManifestRejected("manifest signature does not verify with the coordinator's public key") from None
    return signed.manifest


def check_file(manifest: ModelManifest, data: bytes) -> None:
    """ManifestRejected unless `data` is exactly the file the manifest names."""
    if len(data) != manifest.file.size:
        raise ManifestRejected(f"model file is {len(data)} bytes, the manifest says {manifest.file.size}")
    digest = sha256_bytes(data)
    if digest != manifest.file.sha256:
        raise ManifestRejected(f"model file sha256 {digest[:12]}... differs from the manifest's "
                               f"{manifest.file.sha256[:12]}...")
