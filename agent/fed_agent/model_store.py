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
finite outputs before it may become ``current``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from fed_common.files import atomic_write, fsync_dir
from fed_common.manifest import ManifestRejected, ModelManifest, SignedManifest, check_file, verified

MODEL_FILE, MANIFEST_FILE = "model.tflite", "manifest.json"


def smoke_test(model_path: Path, manifest: ModelManifest) -> None:
    """Load the model with the TFLite interpreter and run one inference; ManifestRejected if
    it cannot load, takes another input than the manifest says, or answers nonsense."""
    from fedapp.tflite import load_interpreter

    try:
        interpreter = load_interpreter(str(model_path))
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        spec = manifest.input
        want = [1, spec.height, spec.width, spec.channels]
        if list(inp["shape"]) != want:
            raise ManifestRejected(f"model input is {list(inp['shape'])}, the manifest says {want}")
        interpreter.set_tensor(inp["index"], np.full(want, 127.5, np.float32))
        interpreter.invoke()
        output = interpreter.get_tensor(out["index"])
    except ManifestRejected:
        raise
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError for a bad file
        raise ManifestRejected(f"model does not load or run: {exc}") from None
    if output.shape[-1] != len(manifest.labels) or not np.isfinite(output).all():
        raise ManifestRejected(f"model answers {output.shape[-1]} values (finite: "
                               f"{bool(np.isfinite(output).all())}) for {len(manifest.labels)} labels")


class ModelStore:
    def __init__(self, root: str | Path, public_key,
                 self_test: Callable[[Path, ModelManifest], None] = smoke_test) -> None:
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
            self.self_test(folder / MODEL_FILE, manifest)
        except ManifestRejected:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._switch(folder)
        return manifest

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
