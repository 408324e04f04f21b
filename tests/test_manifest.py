"""The signed model manifest (fed_common.manifest): what verifies, and what is refused."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fed_common.manifest import ManifestRejected, ModelFile, ModelManifest, check_file, sign, verified

DATA = b"\x1cTFL3 not really a model, but bytes with a hash"
KEY = Ed25519PrivateKey.generate()


def manifest(**changes) -> ModelManifest:
    fields = {"version": 3, "labels": ["head", "hardhat"], "created_at": 1.0,
              "file": ModelFile(name="model_int8.tflite", kind="int8", size=len(DATA),
                                sha256=hashlib.sha256(DATA).hexdigest())}
    return ModelManifest(**{**fields, **changes})


def test_a_signed_manifest_verifies_and_names_the_file():
    body = sign(manifest(), KEY).model_dump_json()
    got = verified(body, KEY.public_key())
    assert got == manifest() and got.file.kind == "int8"
    check_file(got, DATA)


def test_field_order_does_not_matter_to_the_signature():
    signed = json.loads(sign(manifest(), KEY).model_dump_json())
    reordered = {"signature": signed["signature"],
                 "manifest": dict(reversed(list(signed["manifest"].items())))}
    assert verified(json.dumps(reordered), KEY.public_key()).version == 3


@pytest.mark.parametrize("tamper, words", [
    (lambda s: {**s, "manifest": {**s["manifest"], "version": 4}}, "signature does not verify"),
    (lambda s: {**s, "signature": "AAAA" + s["signature"][4:]}, "signature does not verify"),
    (lambda s: {**s, "signature": "not base64!"}, "signature does not verify"),
    (lambda s: {"manifest": s["manifest"]}, "at 'signature': Field required"),
    (lambda s: {**s, "manifest": {**s["manifest"], "extra": 1}}, "at 'manifest.extra'"),
])
def test_a_tampered_or_unsigned_manifest_is_refused(tamper, words):
    signed = json.loads(sign(manifest(), KEY).model_dump_json())
    with pytest.raises(ManifestRejected, match=words):
        verified(json.dumps(tamper(signed)), KEY.public_key())


def test_another_key_is_refused():
    body = sign(manifest(), Ed25519PrivateKey.generate()).model_dump_json()
    with pytest.raises(ManifestRejected, match="does not verify"):
        verified(body, KEY.public_key())


def test_a_file_that_differs_from_the_manifest_is_refused():
    with pytest.raises(ManifestRejected, match="bytes, the manifest says"):
        check_file(manifest(), DATA + b"x")
    with pytest.raises(ManifestRejected, match="sha256"):
        check_file(manifest(), DATA[:-1] + b"?")
