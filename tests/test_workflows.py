"""detect, reweight and augmentation_weights on synthetic blobs with known label noise."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import divaext
from divaext.workflows import augmentation_weights, detect, reweight
from wf_data import auc, blobs

# ---------------------------------------------------------------------------------------
# detect


def test_detect_flags_flipped_labels():
    data = blobs(300, flip=0.2, seed=1)
    res = detect(data.x, data.y)
    assert auc(res.scores, data.flipped) > 0.95
    # at eps = 0 most flagged samples are flipped and most flipped samples are flagged
    hit = (res.detrimental & data.flipped).sum().item()
    assert hit / res.detrimental.sum().item() > 0.8
    assert hit / data.flipped.sum().item() > 0.9


def test_detect_scores_are_grad_times_total_weight():
    data = blobs(120, flip=0.1, seed=2)
    w = torch.rand(120, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    res = detect(data.x, data.y, weights=w, lam=2.0, eps=0.3, intercept=False)
    ref = divaext.loo_derivative(data.x, data.y, w, lam=2.0, loss="ce")
    torch.testing.assert_close(res.grad, ref.grad)
    torch.testing.assert_close(res.scores, ref.grad * w.sum())
    assert torch.equal(res.detrimental, res.scores > 0.3)
    assert res.loss == pytest.approx(float(ref.loss))


def test_detect_with_validation_set():
    train = blobs(200, flip=0.2, seed=3)
    val = blobs(100, seed=4)
    res = detect(train.x, train.y, lam=1.0, intercept=False, val_features=val.x, val_labels=val.y)
    ref = divaext.val_derivative(train.x, train.y, None, val.x, val.y, loss="ce")
    torch.testing.assert_close(res.grad, ref.grad)
    assert auc(res.scores, train.flipped) > 0.9


def test_detect_numpy_float32_and_result_types():
    data = blobs(150, flip=0.2, seed=5, dtype=torch.float32)
    res = detect(data.x.numpy(), data.y.numpy())  # NumPy in → NumPy out
    assert isinstance(res.scores, np.ndarray) and res.scores.dtype == np.float32
    assert res.detrimental.dtype == np.bool_ and res.scores.shape == (150,)
    assert res.predicted_label.dtype == np.int64 and isinstance(res.label_quality, np.ndarray)
    assert isinstance(res.loss, float)
    assert auc(torch.from_numpy(res.scores), data.flipped) > 0.9
    res_t = detect(data.x, data.y)  # tensors in → tensors out
    assert res_t.scores.dtype == torch.float32 and res_t.scores.device.type == "cpu"
    np.testing.assert_array_equal(res.scores, res_t.scores.numpy())


def test_detect_on_device(device, dtype):
    data = blobs(100, flip=0.2, seed=6, dtype=dtype)
    res = detect(data.x.to(device), data.y.to(device))
    ref = detect(data.x, data.y)
    assert res.scores.device.type == "cpu"
    torch.testing.assert_close(res.scores, ref.scores, rtol=1e-3, atol=1e-3 * float(ref.scores.abs().max()))


def test_detect_bad_input():
    data = blobs(30)
    with pytest.raises(ValueError, match="both val_features and val_labels"):
        detect(data.x, data.y, val_features=data.x)
    with pytest.raises(ValueError, match="unknown loss"):
        detect(data.x, data.y, loss="hinge")
    with pytest.raises(TypeError, match="float32 or float64"):
        detect(data.x.long(), data.y)
    with pytest.raises(ValueError, match="NaN or Inf"):
        detect(torch.full((3, 2), float("nan"), dtype=torch.float64), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="labels has 29 entries"):
        detect(data.x, data.y[:29])


# ---------------------------------------------------------------------------------------
# reweight


def test_reweight_lowers_the_loo_loss_on_digits():
    # ce_misclassified (the default) is not smooth: the misclassified set moves with the
    # weights. On real features (scikit-learn's bundled digits) it still decreases steadily.
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = torch.tensor(digits.data / 16.0), torch.tensor(digits.target)
    res = reweight(x, y, select=None, lam=1.0, intercept=False, loss="ce_misclassified", steps=2)
    assert len(res.losses) == 3
    assert res.losses[0] > res.losses[1] > res.losses[2]
    assert bool((res.weights >= 0).all()) and res.weights.shape == (len(y),)
    final = divaext.loo_derivative(x, y, res.weights, loss="ce_misclassified").loss
    assert float(final) == pytest.approx(res.losses[-1])


@pytest.mark.parametrize("seed", [0, 1])
def test_reweight_lowers_the_smooth_ce_loss(seed):
    data = blobs(200, sep=0.7, seed=seed)
    res = reweight(data.x, data.y, select=None, loss="ce", steps=3)
    assert res.losses[0] > res.losses[1] > res.losses[2] > res.losses[3]


def test_reweight_step_moves_the_largest_weight_by_step_size():
    data = blobs(100, sep=0.7, seed=8)
    g = divaext.loo_derivative(data.x, data.y, loss="ce").grad
    res = reweight(data.x, data.y, select=None, lam=1.0, intercept=False, loss="ce", steps=1, step_size=0.5)
    torch.testing.assert_close(res.weights, 1 - 0.5 * g / g.abs().max())
    assert float((res.weights - 1).abs().max()) == pytest.approx(0.5)


def test_reweight_downweights_flipped_labels_with_ce():
    data = blobs(300, flip=0.2, seed=9)
    res = reweight(data.x, data.y, select=None, loss="ce", steps=2)
    assert res.weights[data.flipped].mean() < 0.5 * res.weights[~data.flipped].mean()


def test_reweight_trainable_mask_and_validation_loss():
    train = blobs(150, flip=0.2, seed=10)
    val = blobs(80, seed=11)
    mask = torch.arange(150) < 100
    res = reweight(train.x, train.y, select=None, lam=1.0, intercept=False, loss="ce", trainable=mask,
                   val_features=val.x, val_labels=val.y)
    assert torch.equal(res.weights[~mask], torch.ones(50, dtype=torch.float64))
    assert res.losses[-1] < res.losses[0]
    ref = divaext.val_derivative(train.x, train.y, res.weights, val.x, val.y, loss="ce").loss
    assert float(ref) == pytest.approx(res.losses[-1])


def test_reweight_loss_weights():
    data = blobs(120, flip=0.2, seed=12)
    lw = (torch.arange(120) < 60).double()  # only the first half's LOO loss counts
    res = reweight(data.x, data.y, select=None, lam=1.0, intercept=False, loss="ce", steps=1, loss_weights=lw)
    d0 = divaext.loo_derivative(data.x, data.y, loss="ce", loss_weights=lw)
    torch.testing.assert_close(res.weights, (1 - d0.grad / d0.grad.abs().max()).clamp_min(0))
    assert res.losses[0] == pytest.approx(float(d0.loss))
    with pytest.raises(ValueError, match="loss_weights apply to the LOO loss only"):
        reweight(data.x, data.y, select=None, loss_weights=lw, val_features=data.x, val_labels=data.y)


def test_reweight_zero_gradient_keeps_weights():
    # two far apart classes: no LOO mistakes, so the misclassified-only loss and its gradient are 0
    x = torch.tensor([[10.0, 0], [11, 0], [12, 0], [0, 10], [0, 11], [0, 12]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    res = reweight(x, y, select=None, lam=0.1, loss="ce_misclassified")
    assert res.losses == [0.0, 0.0, 0.0]
    assert torch.equal(res.weights, torch.ones(6, dtype=torch.float64))


def test_reweight_bad_input():
    data = blobs(20)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        reweight(data.x, data.y, steps=0)
    with pytest.raises(ValueError, match="select must be 'auto' or None, got 'best'"):
        reweight(data.x, data.y, select="best")
    with pytest.raises(ValueError, match="folds must be between 2 and the number of samples"):
        reweight(data.x, data.y, folds=50)
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        reweight(data.x, data.y, step_size=-1)
    with pytest.raises(ValueError, match=r"trainable must be a \(20,\) bool mask"):
        reweight(data.x, data.y, trainable=torch.ones(20))
    with pytest.raises(ValueError, match="trainable selects no sample"):
        reweight(data.x, data.y, trainable=torch.zeros(20, dtype=torch.bool))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        reweight(data.x, data.y, weights=-torch.ones(20))
    with pytest.raises(ValueError, match="lam must be a number > 0 or 'auto', got 0"):
        reweight(data.x, data.y, lam=0)


# ---------------------------------------------------------------------------------------
# augmentation_weights


def _augmented(seed: int):
    data = blobs(200, seed=seed)
    g = torch.Generator().manual_seed(seed)
    copies = {
        "jitter": data.x + 0.3 * torch.randn(data.x.shape, generator=g, dtype=data.x.dtype),
        "scale": 1.2 * data.x,
        # pure noise: features unrelated to the labels, at the data's scale
        "noise": torch.randn(data.x.shape, generator=g, dtype=data.x.dtype) * data.x.std(),
    }
    return data, copies


@pytest.mark.parametrize("seed", [0, 1])
def test_augmentation_noise_gets_the_lowest_probability(seed):
    data, copies = _augmented(seed)
    res = augmentation_weights(copies, data.y)
    p = res.probabilities
    assert list(p) == ["jitter", "scale", "noise"]
    assert sum(p.values()) == pytest.approx(1.0)
    assert p["noise"] < min(p["jitter"], p["scale"]) - 0.05
    assert res.weights.shape == (600,)
    share = res.weights.view(3, 200).sum(1) / res.weights.sum()
    assert share.tolist() == pytest.approx(list(p.values()))


def test_augmentation_with_fixed_original():
    data, copies = _augmented(2)
    res = augmentation_weights(copies, data.y.numpy(), include_original=data.x)
    assert res.weights.shape == (600,)  # the original's weights are not reported
    assert res.probabilities["noise"] < min(res.probabilities["jitter"], res.probabilities["scale"])


def test_augmentation_bad_input():
    data, copies = _augmented(3)
    with pytest.raises(ValueError, match="non-empty dict"):
        augmentation_weights({}, data.y)
    with pytest.raises(ValueError, match="every copy needs the same n and d"):
        augmentation_weights({"a": data.x, "b": data.x[:10]}, data.y)
    with pytest.raises(TypeError, match=r"augmented\['b'\] have dtype torch.float32"):
        augmentation_weights({"a": data.x, "b": data.x.float()}, data.y)
    with pytest.raises(ValueError, match="include_original has shape"):
        augmentation_weights(copies, data.y, include_original=data.x[:, :3])
    with pytest.raises(ValueError, match="labels has 199 entries"):
        augmentation_weights(copies, data.y[:199])
    assert np.isfinite(list(augmentation_weights(copies, data.y, steps=1).probabilities.values())).all()
