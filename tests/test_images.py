"""Bad files in a client's folder are skipped by name with a reason; good ones are used."""

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from fedapp.images import check_label_folders, decode_image, scan_folder


def jpeg_bytes(color=(200, 150, 0), size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path):
    for label in ("head", "hardhat"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "good.jpg").write_bytes(jpeg_bytes())
    good = jpeg_bytes()
    (tmp_path / "head" / "corrupt.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "head" / "empty.jpg").write_bytes(b"")
    (tmp_path / "hardhat" / "notes.jpg").write_text("this is text, not a photo")
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "x.jpg").write_bytes(good)
    return tmp_path


def test_scan_skips_bad_files_by_name(folder):
    scan = scan_folder(folder, ["head", "hardhat"])
    assert sorted((f.path.parent.name, f.path.name) for f in scan.files) == [
        ("hardhat", "good.jpg"), ("head", "good.jpg")]
    reasons = {p.split("/")[-1]: r for p, r in scan.skipped}
    assert set(reasons) == {"corrupt.jpg", "empty.jpg", "notes.jpg", "cats"}
    assert "empty file" in reasons["empty.jpg"]
    assert "not a readable image" in reasons["notes.jpg"]
    assert "truncated" in reasons["corrupt.jpg"].lower()
    assert "unknown label folder" in reasons["cats"]
    assert all(f.label == ["head", "hardhat"].index(f.path.parent.name) for f in scan.files)
    # the user's files are still all there
    assert (folder / "head" / "corrupt.jpg").exists() and (folder / "cats" / "x.jpg").exists()


def test_decode_gives_160_rgb_float(folder):
    pixels = decode_image(jpeg_bytes(size=(300, 100)))
    assert pixels.shape == (160, 160, 3) and pixels.dtype == np.float32
    assert 0 <= pixels.min() and pixels.max() <= 255


def test_label_mismatch_is_named(folder):
    shutil.rmtree(folder / "cats")
    check_label_folders(folder, ["head", "hardhat"])
    with pytest.raises(ValueError, match=r"missing \['helmet'\], unexpected \['hardhat'\]"):
        check_label_folders(folder, ["head", "helmet"])
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        check_label_folders(folder / "nope", ["head", "hardhat"])
