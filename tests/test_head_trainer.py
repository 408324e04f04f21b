"""The TFLite head trainer computes exactly the SGD-momentum step of the numpy reference."""

import numpy as np
import pytest

from fedapp.head import HeadTrainer, accuracy, init_head, predict_proba


@pytest.fixture(scope="module")
def trainer_path(tmp_path_factory):
    from fed_coordinator.models.head_trainer import export_head_trainer

    path = tmp_path_factory.mktemp("trainer") / "trainer.tflite"
    export_head_trainer(path, dim=16, hidden=8, classes=2)
    return str(path)


def reference_step(weights, velocity, x, y, lr, momentum, sample_weight=None):
    w0, b0, w1, b1 = weights
    h_pre = x @ w0 + b0
    h = np.maximum(h_pre, 0)
    probs = predict_proba(weights, x)
    onehot = np.eye(w1.shape[1], dtype=np.float32)[y]
    weight = np.ones(len(y), np.float32) if sample_weight is None else sample_weight
    d_logits = weight[:, None] * (probs - onehot) / len(y)
    d_h = (d_logits @ w1.T) * (h_pre > 0)
    grads = [x.T @ d_h, d_h.sum(0), h.T @ d_logits, d_logits.sum(0)]
    new_v = [momentum * v - lr * g for v, g in zip(velocity, grads)]
    return [w + v for w, v in zip(weights, new_v)], new_v


def test_trainer_matches_numpy_reference(trainer_path):
    rng = np.random.default_rng(1)
    weights = init_head(3, dim=16, hidden=8, classes=2)
    trainer = HeadTrainer(trainer_path)
    trainer.set_weights(weights)
    assert all(np.array_equal(a, b) for a, b in zip(trainer.get_weights(), weights))
    velocity = [np.zeros_like(w) for w in weights]
    for batch in (8, 5, 1):  # dynamic batch sizes, including the last partial batch
        x = rng.normal(size=(batch, 16)).astype(np.float32)
        y = rng.integers(0, 2, batch).astype(np.int32)
        trainer._train(x=x, y=y, lr=np.float32(0.05), momentum=np.float32(0.9))
        weights, velocity = reference_step(weights, velocity, x, y, 0.05, 0.9)
    for got, want in zip(trainer.get_weights(), weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_fit_learns_a_separable_problem(trainer_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype(np.int32)
    x = rng.normal(size=(200, 16)).astype(np.float32) + 1.5 * (2 * y[:, None] - 1)
    trainer = HeadTrainer(trainer_path)
    start = init_head(0, dim=16, hidden=8, classes=2)
    trainer.set_weights(start)
    loss, acc = trainer.fit(x, y, epochs=5, batch_size=8, lr=0.01, momentum=0.9, seed=0)
    assert acc > 0.95 and loss < 0.2
    assert accuracy(trainer.get_weights(), x, y) > 0.95


def test_set_weights_resets_momentum(trainer_path):
    """A new round starts from the global weights with no momentum left from the last one."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 16)).astype(np.float32)
    y = rng.integers(0, 2, 8).astype(np.int32)
    start = init_head(5, dim=16, hidden=8, classes=2)
    a, b = HeadTrainer(trainer_path), HeadTrainer(trainer_path)
    a.set_weights(start)
    a.fit(x, y, epochs=3, batch_size=4, lr=0.1, momentum=0.9, seed=0)
    a.set_weights(start)
    b.set_weights(start)
    a.fit(x, y, epochs=1, batch_size=8, lr=0.1, momentum=0.9, seed=0)
    b.fit(x, y, epochs=1, batch_size=8, lr=0.1, momentum=0.9, seed=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-6)


def test_fit_refuses_empty_data(trainer_path):
    trainer = HeadTrainer(trainer_path)
    with pytest.raises(ValueError, match="no training examples"):
        trainer.fit(np.zeros((0, 16), np.float32), np.zeros(0, np.int32), epochs=1,
                    batch_size=8, lr=0.1, momentum=0.9, seed=0)


def test_weighted_steps_match_the_numpy_reference(trainer_path):
    """Each example's gradient is scaled by its weight (a pseudo label at 0.5 counts half)."""
    rng = np.random.default_rng(4)
    weights = init_head(6, dim=16, hidden=8, classes=2)
    trainer = HeadTrainer(trainer_path)
    assert trainer.weighted
    trainer.set_weights(weights)
    velocity = [np.zeros_like(w) for w in weights]
    for batch in (8, 3):
        x = rng.normal(size=(batch, 16)).astype(np.float32)
        y = rng.integers(0, 2, batch).astype(np.int32)
        w = rng.choice([1.0, 0.5, 0.0], batch).astype(np.float32)
        out = trainer._train(x=x, y=y, lr=np.float32(0.05), momentum=np.float32(0.9), sample_weight=w)
        log_p = np.log(predict_proba(weights, x)[np.arange(batch), y])
        np.testing.assert_allclose(float(out["loss"]), -(w * log_p).sum() / batch, rtol=1e-4)
        weights, velocity = reference_step(weights, velocity, x, y, 0.05, 0.9, w)
    for got, want in zip(trainer.get_weights(), weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_weights_of_one_train_exactly_as_no_weights(trainer_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 16)).astype(np.float32)
    y = rng.integers(0, 2, 20).astype(np.int32)
    start = init_head(7, dim=16, hidden=8, classes=2)
    plain, ones, half = HeadTrainer(trainer_path), HeadTrainer(trainer_path), HeadTrainer(trainer_path)
    for trainer, w in ((plain, None), (ones, np.ones(20, np.float32)), (half, np.full(20, 0.5, np.float32))):
        trainer.set_weights(start)
        trainer.fit(x, y, epochs=2, batch_size=8, lr=0.1, momentum=0.9, seed=0, sample_weight=w)
    assert all(np.array_equal(a, b) for a, b in zip(plain.get_weights(), ones.get_weights()))
    assert not all(np.allclose(a, b) for a, b in zip(plain.get_weights(), half.get_weights()))


@pytest.mark.parametrize("bad", [np.ones(3, np.float32), np.array([1, -1], np.float32),
                                 np.array([1, np.nan], np.float32)])
def test_fit_refuses_weights_that_do_not_fit(trainer_path, bad):
    trainer = HeadTrainer(trainer_path)
    with pytest.raises(ValueError, match="sample_weight"):
        trainer.fit(np.zeros((2, 16), np.float32), np.zeros(2, np.int32), epochs=1, batch_size=8,
                    lr=0.1, momentum=0.9, seed=0, sample_weight=bad)
