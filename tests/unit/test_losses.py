"""Detector losses against hand-computed values and direct transcriptions (docs/methods.md §3–§5)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from oodkit.stages.train_detector import losses


def test_oe_loss_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, -2.0]])
    # row 1 uniform: log 3 - 0; row 2: logsumexp(2, 0, -2) - 0
    want = (math.log(3) + math.log(math.exp(2) + 1 + math.exp(-2))) / 2
    assert losses.oe_loss(logits).item() == pytest.approx(want, abs=1e-6)
    # equals cross-entropy to the uniform target
    soft = -(F.log_softmax(logits, dim=1)).mean(dim=1).mean()
    assert losses.oe_loss(logits).item() == pytest.approx(soft.item(), abs=1e-6)


def test_energy_margin_loss_by_hand() -> None:
    logits_in = torch.tensor([[30.0, 0.0], [20.0, 20.0]])  # E = -30.0..., -20.69
    logits_out = torch.tensor([[1.0, 1.0], [10.0, 0.0]])  # E = -1.69, -10.0000454
    e_in = [-math.log(math.exp(30) + 1), -(20 + math.log(2))]
    e_out = [-(1 + math.log(2)), -math.log(math.exp(10) + 1)]
    want = sum(max(0, e + 25) ** 2 for e in e_in) / 2 + sum(max(0, -7 - e) ** 2 for e in e_out) / 2
    got = losses.energy_margin_loss(logits_in, logits_out, m_in=-25, m_out=-7)
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert want > 0  # both hinge terms are active in this example


def _club_naive(mu, logvar, y):
    n = len(y)
    total = 0.0
    for i in range(n):
        pos = sum(
            -((mu[i, d] - y[i, d]) ** 2) / (2 * math.exp(logvar[i, d])) for d in range(y.shape[1])
        )
        neg = sum(
            sum(-((y[j, d] - mu[i, d]) ** 2) for j in range(n)) / n / (2 * math.exp(logvar[i, d]))
            for d in range(y.shape[1])
        )
        total += pos - neg
    return total / n


def test_club_bound_equals_the_n_squared_formula() -> None:
    g = torch.Generator().manual_seed(0)
    mu, y = torch.randn(6, 4, generator=g).double(), torch.randn(6, 4, generator=g).double()
    logvar = torch.tanh(torch.randn(6, 4, generator=g)).double()
    got = losses.club_bound(mu, logvar, y).item()
    assert got == pytest.approx(_club_naive(mu.numpy(), logvar.numpy(), y.numpy()), abs=1e-10)


def test_club_estimator_loss_by_hand() -> None:
    mu = torch.tensor([[0.0, 1.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    y = torch.tensor([[1.0, 3.0]])
    # -[ -(0-1)^2/1 - 0 + -(1-3)^2/2 - log 2 ] = 1 + 2 + log 2
    assert losses.club_estimator_loss(mu, logvar, y).item() == pytest.approx(
        3 + math.log(2), abs=1e-6
    )


def test_club_estimator_learns_dependence() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.randn(4, 4) + 0.1 * torch.randn(256, 4)
    est = losses.ClubEstimator(4, 4, hidden=32)
    opt = torch.optim.Adam(est.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        losses.club_estimator_loss(*est(x), y).backward()
        opt.step()
    dependent = losses.club_bound(*est(x), y).item()
    independent = losses.club_bound(*est(x), y[torch.randperm(256)]).item()
    assert dependent > 1.0 > abs(independent)


def test_three_head_loss_by_hand() -> None:
    bin_logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    in_logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    out_logits = torch.tensor([[9.0, 9.0, 9.0], [0.0, 3.0, 0.0]])
    is_outlier = torch.tensor([0, 1])
    labels = torch.tensor([0, 1])
    ce = lambda z, t: math.log(sum(math.exp(v) for v in z)) - z[t]  # noqa: E731
    row_id = ce([2.0, 0.0], 0) + ce([1.0, 0.0, 0.0], 0)  # the out head is ignored for ID rows
    row_out = ce([0.0, 1.0], 1) + 0.3 * ce(
        [0.0, 3.0, 0.0], 1
    )  # the in head is ignored for outliers
    got = losses.three_head_loss(bin_logits, in_logits, out_logits, is_outlier, labels, lam=0.3)
    assert got.item() == pytest.approx((row_id + row_out) / 2, abs=1e-6)
