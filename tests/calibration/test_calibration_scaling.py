"""Temperature, vector and matrix scaling: NLL never worse, known temperature recovered, API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab.calibration import (
    MatrixScaling,
    TemperatureScaling,
    VectorScaling,
    expected_calibration_error,
)
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    NotFittedError,
    ShapeError,
)

SCALERS = [TemperatureScaling, VectorScaling, MatrixScaling]


def _draw(n: int, k: int, t_true: float, seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits z ~ N(0, scale^2) and labels drawn from softmax(z / t_true)."""
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z / t_true, dim=1), 1, generator=g).squeeze(1)
    return z, y


def _nll(z: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cross_entropy(z.double(), y))


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_temperature_recovered(t_true):
    z, y = _draw(20000, 10, t_true, seed=0)
    ts = TemperatureScaling().fit(z, y)
    assert ts.temperature_ == pytest.approx(t_true, rel=0.04)
    # A true minimum: nearby temperatures are no better.
    best = _nll(ts.transform(z), y)
    for factor in (0.98, 1.02):
        assert _nll(z / (ts.temperature_ * factor), y) >= best - 1e-12
    assert ts.fit_nll_ == pytest.approx(best, abs=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_temperature_never_increases_fit_nll(seed):
    t_true = [0.3, 1.0, 1.7, 6.0][seed]
    z, y = _draw(300, 4, t_true, seed=seed, scale=1.5)
    ts = TemperatureScaling().fit(z, y)
    assert _nll(ts.transform(z), y) <= _nll(z, y) + 1e-12
    # Argmax predictions are unchanged.
    assert torch.equal(ts.predict_proba(z).argmax(1), z.argmax(1))


def test_temperature_lowers_ece_of_overconfident_logits():
    z, y = _draw(5000, 10, 3.0, seed=7)  # logits 3x too sharp
    ts = TemperatureScaling().fit(z[:2500], y[:2500])
    before = expected_calibration_error(torch.softmax(z[2500:], 1), y[2500:])
    after = expected_calibration_error(ts.predict_proba(z[2500:]), y[2500:])
    assert before > 0.15 and after < 0.04


@pytest.mark.parametrize("cls", [VectorScaling, MatrixScaling])
def test_vector_and_matrix_nll_at_most_temperature(cls):
    # Labels depend on a per-class bias temperature scaling cannot express.
    z, _ = _draw(1500, 5, 1.0, seed=3, scale=2.0)
    g = torch.Generator().manual_seed(4)
    bias = torch.tensor([1.0, 0.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    y = torch.multinomial(torch.softmax(0.6 * z + bias, 1), 1, generator=g).squeeze(1)
    temp = TemperatureScaling().fit(z, y)
    other = cls().fit(z, y)
    assert _nll(other.transform(z), y) <= _nll(temp.transform(z), y) + 1e-10
    assert other.fit_nll_ < temp.fit_nll_ - 0.01  # the bias is worth something
    # Vector scaling recovers the generating map up to a constant shift of the bias.
    if cls is VectorScaling:
        np.testing.assert_allclose(other.coef_, 0.6, atol=0.1)
        b = other.intercept_ - other.intercept_.mean()
        np.testing.assert_allclose(b, (bias - bias.mean()).numpy(), atol=0.2)


def test_matrix_off_diagonal_regularisation_shrinks_off_diagonal():
    z, y = _draw(400, 4, 1.5, seed=11, scale=2.0)
    free = MatrixScaling().fit(z, y)
    reg = MatrixScaling(off_diagonal_reg=1e3, intercept_reg=1e3).fit(z, y)
    off = ~np.eye(4, dtype=bool)
    assert np.abs(reg.coef_[off]).max() < 0.2 * np.abs(free.coef_[off]).max()
    assert np.abs(reg.coef_[off]).max() < 1e-2 and np.abs(reg.intercept_).max() < 1e-2
    assert free.fit_nll_ <= reg.fit_nll_ + 1e-12


@pytest.mark.parametrize("cls", SCALERS)
def test_deterministic_and_keeps_dtype_device(cls):
    z, y = _draw(200, 3, 2.0, seed=5, scale=2.0)
    a, b = cls().fit(z, y), cls().fit(z.numpy(), y.numpy())
    za, zb = a.transform(z), b.transform(z)
    assert torch.equal(za, zb)
    z32 = z.float()
    out = a.transform(z32)
    assert out.dtype == torch.float32 and out.shape == z.shape and out.device == z.device
    proba = a.predict_proba(z32)
    torch.testing.assert_close(proba.sum(1), torch.ones(200), atol=1e-6, rtol=0)
    assert a.fit(z, y) is a
    assert "max_iter" in repr(a)


@pytest.mark.parametrize("cls", SCALERS)
def test_not_fitted(cls):
    with pytest.raises(NotFittedError, match=cls.__name__):
        cls().transform(torch.zeros(2, 3))
    with pytest.raises(NotFittedError):
        cls().predict_proba(torch.zeros(2, 3))


@pytest.mark.parametrize(
    "make, logits, labels, error, name",
    [
        (TemperatureScaling, torch.tensor([[0.0, float("nan")]]), torch.tensor([0]), InvalidParameterError,
         "logits"),
        (TemperatureScaling, torch.zeros(3), torch.tensor([0, 1, 0]), ShapeError, "logits"),
        (TemperatureScaling, torch.zeros(2, 1), torch.tensor([0, 0]), ShapeError, "logits"),
        (TemperatureScaling, torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), ShapeError, "logits"),
        (TemperatureScaling, torch.zeros(2, 3, dtype=torch.int64), torch.tensor([0, 1]), InvalidTypeError,
         "logits"),
        (TemperatureScaling, torch.zeros(2, 3), torch.tensor([0, 3]), InvalidParameterError, "labels"),
        (VectorScaling, torch.zeros(2, 3), torch.tensor([0, 1, 2]), ShapeError, "labels"),
        (lambda: TemperatureScaling(max_iter=0), torch.zeros(2, 3), torch.tensor([0, 1]),
         InvalidParameterError, "max_iter"),
        (lambda: VectorScaling(tol=-1.0), torch.zeros(2, 3), torch.tensor([0, 1]), InvalidParameterError,
         "tol"),
        (lambda: MatrixScaling(off_diagonal_reg=-1.0), torch.zeros(2, 3), torch.tensor([0, 1]),
         InvalidParameterError, "off_diagonal_reg"),
        (lambda: MatrixScaling(intercept_reg="a"), torch.zeros(2, 3), torch.tensor([0, 1]), InvalidTypeError,
         "intercept_reg"),
    ],
)
def test_bad_fit_input(make, logits, labels, error, name):
    with pytest.raises(error) as info:
        make().fit(logits, labels)
    assert f"'{name}'" in str(info.value) and "\n" not in str(info.value)


def test_transform_wrong_number_of_classes():
    ts = TemperatureScaling().fit(torch.randn(10, 3, generator=torch.Generator().manual_seed(0)),
                                  torch.arange(10) % 3)
    with pytest.raises(ShapeError, match="'logits'"):
        ts.transform(torch.zeros(2, 4))



def test_fitted_parameters_are_stationary_under_autograd():
    # The objectives are convex, so a zero gradient means the global minimum. The gradient is
    # taken by torch autograd on the objective written directly, independent of the library's
    # hand-written NumPy gradients.
    z, y = _draw(400, 4, 1.8, seed=21, scale=2.0)
    ts = TemperatureScaling().fit(z, y)
    inv_t = torch.tensor([1.0 / ts.temperature_], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(F.cross_entropy(z * inv_t, y), inv_t)
    assert abs(float(g)) < 1e-6

    vs = VectorScaling().fit(z, y)
    w = torch.tensor(vs.coef_, requires_grad=True)
    b = torch.tensor(vs.intercept_, requires_grad=True)
    gw, gb = torch.autograd.grad(F.cross_entropy(z * w + b, y), (w, b))
    assert float(gw.abs().max()) < 1e-6 and float(gb.abs().max()) < 1e-6

    lam, mu, k = 0.5, 0.3, 4
    ms = MatrixScaling(off_diagonal_reg=lam, intercept_reg=mu).fit(z, y)
    wm = torch.tensor(ms.coef_, requires_grad=True)
    bm = torch.tensor(ms.intercept_, requires_grad=True)
    off = ~torch.eye(k, dtype=torch.bool)
    objective = (F.cross_entropy(z @ wm.T + bm, y) + lam / (k * (k - 1)) * (wm[off] ** 2).sum()
                 + mu / k * (bm**2).sum())
    gw, gb = torch.autograd.grad(objective, (wm, bm))
    assert float(gw.abs().max()) < 1e-6 and float(gb.abs().max()) < 1e-6
    assert np.abs(ms.coef_[off.numpy()]).max() > 1e-3  # the penalty did not zero everything
