"""Temperature scaling (fedapp.calibration) and the server folder's split into a calibration
part and the gate's part (models.server_folder), and the gate scoring on its part only."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from fedapp import calibration as cal
from fedapp.calibration import calibrated, ece_bins, expected_calibration_error, fit_temperature
from fed_coordinator.models import champion
from fed_coordinator.models.champion import Score, gate
from fed_coordinator.models.server_folder import split_server_folder

LABELS = ["head", "hardhat"]


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sampled(n: int, sharpen: float, seed: int = 0):
    """Labels drawn from softmax(true logits); the "model" reports softmax(sharpen * logits)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, size=(n, 3))
    truth = np.array([rng.choice(3, p=p) for p in softmax(logits)])
    return softmax(sharpen * logits), truth


@pytest.mark.parametrize("sharpen", [4.0, 0.5])  # over-confident, under-confident
def test_fitting_a_temperature_lowers_the_calibration_error(sharpen):
    probs, truth = sampled(3000, sharpen)
    bins = ece_bins(len(truth))
    before = expected_calibration_error(probs, truth, bins)
    temperature = fit_temperature(probs, truth, floor=1e-12)
    held_out, held_truth = sampled(3000, sharpen, seed=1)  # judged on other draws
    after = expected_calibration_error(calibrated(held_out, temperature, 1e-12), held_truth, bins)
    assert bins == 15 and before > 0.08
    assert temperature == pytest.approx(sharpen, rel=0.15)
    assert after < 0.03 and after < before / 3, (before, after)


def test_a_small_set_without_mistakes_does_not_drive_the_temperature_to_the_bound(monkeypatch):
    probs = np.array([[0.999, 0.001]] * 8)
    truth = np.zeros(8, int)
    assert 0.8 < fit_temperature(probs, truth, floor=1e-12) <= 1.0  # the prior holds it near 1
    monkeypatch.setattr(cal, "PRIOR_SIGMA", float("inf"))  # plain likelihood: no minimum, runs to the bound
    assert fit_temperature(probs, truth, floor=1e-12) == pytest.approx(cal.TEMPERATURE_RANGE[0], rel=0.01)


def test_calibrated_keeps_the_best_label_sums_to_one_and_handles_an_int8_zero():
    p = np.array([[0.99609375, 0.0], [0.3, 0.7], [0.6, 0.4]])
    out = calibrated(p, 4.0, 1 / 512)
    assert np.allclose(out.sum(axis=1), 1) and (out.argmax(1) == p.argmax(1)).all()
    gap = np.log(0.99609375 * 512)  # the zero counts as the floor
    assert out[0, 0] == pytest.approx(1 / (1 + np.exp(-gap / 4)))
    assert np.allclose(calibrated(p[1:], 1.0, 1e-12), p[1:])  # T = 1 on probabilities: unchanged
    assert out[2, 0] < 0.6 and calibrated(p, 0.5, 1e-12)[2, 0] > 0.6


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    truth = np.array([0, 1, 1, 1])
    # two bins: [0.5, 1) holds all four: accuracy 3/4, mean confidence (0.9+0.8+0.7+0.55)/4
    assert expected_calibration_error(probs, truth, 2) == pytest.approx(abs(0.75 - 0.7375))
    # ten bins: 0.9 right, 0.8 wrong, 0.7 right, 0.55 right
    assert expected_calibration_error(probs, truth, 10) == pytest.approx((0.1 + 0.8 + 0.3 + 0.45) / 4)
    assert ece_bins(27) == 2 and ece_bins(9) == 1 and ece_bins(1000) == 15


class Registry:
    def path(self, version):
        return version  # score_model is replaced: the "path" is the version


def photo_folder(root, per_label: dict[str, int]):
    """root/<label>/NN.jpg: distinct small JPEGs (random pixels, so distinct hashes)."""
    rng = np.random.default_rng(7)
    for label, count in per_label.items():
        (root / label).mkdir(parents=True)
        for i in range(count):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
            (root / label / f"{i:02d}.jpg").write_bytes(buf.getvalue())
    return root


def names(files):
    return {f.path.relative_to(f.path.parents[1]).as_posix() for f in files}


def test_the_split_is_deterministic_disjoint_by_content_and_per_label(tmp_path):
    folder = photo_folder(tmp_path / "a", {"head": 15, "hardhat": 12})
    split = split_server_folder(folder, LABELS)
    again = split_server_folder(folder, LABELS)
    assert split.skipped is None and names(split.calibration) == names(again.calibration)
    assert not names(split.calibration) & names(split.gate)
    assert len(split.calibration) + len(split.gate) == 27
    per_label = [sum(f.label == i for f in split.calibration) for i in range(2)]
    assert per_label == [5, 4]  # 30% of 15 and of 12, rounded
    assert [f.digest for f in split.calibration] and all(
        f.digest < min(g.digest for g in split.gate if g.label == f.label) for f in split.calibration)
    # By content: the same photos under other names split the same way, and a copy of a
    # calibration photo in the folder stays on the calibration side.
    renamed = tmp_path / "b"
    for f in split.calibration + split.gate:
        (renamed / f.path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f.path, renamed / f.path.parent.name / f"x{f.digest[:8]}.jpg")
    first = split.calibration[0]
    shutil.copy(first.path, renamed / first.path.parent.name / "copy.jpg")
    other = split_server_folder(renamed, LABELS)
    assert {f.digest for f in other.calibration} == {f.digest for f in split.calibration}
    assert "copy.jpg" in {f.path.name for f in other.calibration}


def test_a_folder_too_small_for_both_parts_has_no_calibration_part(tmp_path):
    folder = photo_folder(tmp_path, {"head": 10, "hardhat": 5})
    split = split_server_folder(folder, LABELS)
    assert split.calibration == [] and len(split.gate) == 15
    assert "label 'hardhat' has 5 distinct images, fewer than the 6" in split.skipped


def test_the_gate_scores_both_models_on_its_part_only(tmp_path, monkeypatch):
    folder = photo_folder(tmp_path, {"head": 15, "hardhat": 12})
    split = split_server_folder(folder, LABELS)
    seen = {}

    def fake_score(model_folder, files, labels):
        seen[model_folder] = names(files)
        return {1: Score(0.8, 0, 0.5, len(files)), 2: Score(0.9, 0, 0.5, len(files))}[model_folder]

    monkeypatch.setattr(champion, "score_model", fake_score)
    verdict = gate(Registry(), 2, 1, folder, LABELS, margin=0.05, min_accuracy=0.6)
    assert verdict.promoted and verdict.images == len(split.gate) == 18
    assert seen[1] == seen[2] == names(split.gate)
    assert not seen[2] & names(split.calibration)


def test_without_a_calibration_part_the_gate_keeps_the_whole_folder(tmp_path, monkeypatch):
    folder = photo_folder(tmp_path, {"head": 10, "hardhat": 5})
    seen = []
    monkeypatch.setattr(champion, "score_model",
                        lambda model_folder, files, labels: seen.append(len(files)) or Score(0.9, 0, 0.5, len(files)))
    assert gate(Registry(), 1, None, folder, LABELS, margin=0.0, min_accuracy=0.6).images == 15 and seen == [15]
