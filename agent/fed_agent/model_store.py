"""The models a Pi can run: verified, self-tested, switched atomically, the last one kept.

Layout under ``<state_dir>/models/``: ``v0003/`` holds ``model.tflite`` and the signed
``manifest.json`` it came with; ``current`` is a symlink to the version running and
``previous`` to the one before it (an instant rollback needs no download). A version folder
appears whole or not at all (written as a hidden temp folder, then renamed), and the
``current`` link is replaced with one rename, so a power cut leaves the old model or the new
one, never half of either.

Nothing is trusted because of where it came from: the manifest must verify with the
coordinator's public key (fed_common.manifest), the file must have the manifest's size and
SHA-256, and the model must load and answer a smoke inference with the labels' number of
finite outputs before it may become ``current``; where the Pi has labeled test images of its
own, it must also score on them no worse than the running model by more than a margin
(self_test.py). What the self-test found is kept next to the version (``self_test.json``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from fed_common.files import atomic_write, fsync_dir
from fed_common.manifest import ManifestRejected, ModelManifest, SignedManifest, check_file, verified
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MODEL_FILE, MANIFEST_FILE, SELF_TEST_FILE = "model.tflite", "manifest.json", "self_test.json"
SelfTestFunction = Callable[[Path, ModelManifest], Optional["SelfTestResult"]]


class SelfTestResult(BaseModel):
    """The self-test a version passed, kept next to it (``self_test.json``) so the heartbeat
    reports it after a restart, and after a rollback to a version kept on disk.

    `accuracy` is on this Pi's own labeled test images (None when it had none: a smoke
    inference only); `running_*` is the model that ran at the time, on the same images."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = Field(ge=1)
    accuracy: Optional[float] = Field(None, ge=0, le=1)
    images: int = Field(0, ge=0)
    running_version: Optional[int] = None
    running_accuracy: Optional[float] = Field(None, ge=0, le=1)
    margin: Optional[float] = None
    time: float = Field(default_factory=time.time)


def smoke_test(model_path: Path, manifest: ModelManifest) -> SelfTestResult:
    """Load the model with the TFLite interpreter and run one inference; ManifestRejected if
    it cannot load, takes another input than the manifest says, or answers nonsense."""
    from .classifier import ModelClassifier  # it reads this module's layout: imported late

    ModelClassifier(model_path, manifest).smoke()
    return SelfTestResult(version=manifest.version)


def models_root(state_dir: str | Path) -> Path:
    """Where an agent with this state folder keeps its models."""
    return Path(state_dir) / "models"


class ModelStore:
    def __init__(self, root: str | Path, public_key,
                 self_test: SelfTestFunction = smoke_test) -> None:
        self.root = Path(root)
        self.public_key, self.self_test = public_key, self_test
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, version: int) -> Path:
        return self.root / f"v{version:04d}"

    def _linked(self, name: str) -> Optional[ModelManifest]:
        link = self.root / name
        try:
            signed = SignedManifest.model_validate_json((link / MANIFEST_FILE).read_bytes())
        except (OSError, ValueError):
            return None
        return signed.manifest

    def running(self) -> Optional[ModelManifest]:
        """The manifest of the model in use (None before the first install)."""
        return self._linked("current")

    def previous(self) -> Optional[ModelManifest]:
        return self._linked("previous")

    def verify(self, signed_body: bytes) -> ModelManifest:
        """The manifest, if its signature verifies with the coordinator's key (else ManifestRejected)."""
        return verified(signed_body, self.public_key)

    def install(self, signed_body: bytes, data: bytes) -> ModelManifest:
        """Verify, store and self-test a model, then make it current; ManifestRejected (with
        the reason) leaves everything as it was."""
        manifest = self.verify(signed_body)
        check_file(manifest, data)
        folder = self.folder(manifest.version)
        if not (folder / MANIFEST_FILE).is_file():
            self._write_folder(folder, signed_body, data)
        try:
            result = self.self_test(folder / MODEL_FILE, manifest)
        except ManifestRejected:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if result is not None:  # before the switch: a running model always has its result
            atomic_write(folder / SELF_TEST_FILE, result.model_dump_json() + "\n")
        self._switch(folder)
        return manifest

    def self_tested(self) -> Optional[SelfTestResult]:
        """The self-test the running model passed (None: none recorded, or no model runs)."""
        current = self.root / "current"
        try:
            result = SelfTestResult.model_validate_json((current / SELF_TEST_FILE).read_bytes())
        except (OSError, ValidationError, ValueError):
            return None
        running = self.running()
        return result if running is not None and running.version == result.version else None

    def installed(self, version: int) -> Optional[ModelManifest]:
        """The manifest of a version kept on disk, if it still verifies (signature, size and
        SHA-256 of the file); None otherwise (it must be downloaded again)."""
        folder = self.folder(version)
        try:
            manifest = self.verify((folder / MANIFEST_FILE).read_bytes())
            check_file(manifest, (folder / MODEL_FILE).read_bytes())
        except (OSError, ManifestRejected):
            return None
        return manifest if manifest.version == version else None

    def switch_to(self, version: int) -> ModelManifest:
        """Make an installed version current again (a rollback needs no download)."""
        folder = self.folder(version)
        manifest = SignedManifest.model_validate_json((folder / MANIFEST_FILE).read_bytes()).manifest
        self._switch(folder)
        return manifest

    def _write_folder(self, folder: Path, signed_body: bytes, data: bytes) -> None:
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{folder.name}."))
        try:
            atomic_write(tmp / MODEL_FILE, data)
            atomic_write(tmp / MANIFEST_FILE, signed_body)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.root)

    def _switch(self, folder: Path) -> None:
        current = self.root / "current"
        before = os.readlink(current) if current.is_symlink() else None
        if before == folder.name:
            return
        self._point("current", folder.name)
        if before is not None:
            self._point("previous", before)
        keep = {folder.name, before}
        for old in self.root.glob("v[0-9]*"):  # an SD card keeps two models, not every one ever run
            if old.is_dir() and old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)

    def _point(self, name: str, target: str) -> None:
        """Replace the symlink `name` with one rename (never a moment without it)."""
        tmp = self.root / f".{name}.{os.getpid()}.link"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, self.root / name)
        fsync_dir(self.root)
