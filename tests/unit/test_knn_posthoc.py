"""kNN search and post-hoc scores against brute force and pytorch-ood 0.4."""

from __future__ import annotations

import pytest
import torch
from pytorch_ood.detector import KNN, EnergyBased, MaxLogit, MaxSoftmax

from oodkit.neighbors import knn_search
from oodkit.stages.score import posthoc


def brute_force(q: torch.Tensor, r: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = torch.cdist(q.double(), r.double()) ** 2
    return d.topk(k, dim=1, largest=False)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize(("n_q", "n_r", "k"), [(37, 500, 1), (64, 1000, 50), (5, 60, 60)])
def test_knn_search_matches_brute_force(backend: str, n_q: int, n_r: int, k: int) -> None:
    g = torch.Generator().manual_seed(n_q * n_r + k)
    q, r = torch.randn(n_q, 16, generator=g), torch.randn(n_r, 16, generator=g)
    d, i = knn_search(q, r, k, backend=backend, query_chunk=10, ref_chunk=77)
    d_ref, i_ref = brute_force(q, r, k)
    assert torch.allclose(d.double(), d_ref, atol=1e-4, rtol=1e-5)
    assert (i == i_ref).float().mean() > 0.99  # ties aside, the same neighbours
    assert torch.all(d[:, 1:] >= d[:, :-1])


def test_knn_search_rejects_bad_k() -> None:
    with pytest.raises(ValueError, match="k = 11"):
        knn_search(torch.zeros(2, 3), torch.zeros(10, 3), 11)


def test_logit_scores_equal_pytorch_ood() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 7, generator=g) * 4
    assert torch.allclose(posthoc.msp(logits), -MaxSoftmax.score(logits), atol=1e-6)
    assert torch.allclose(posthoc.msp(logits, 2.0), -MaxSoftmax.score(logits, 2.0), atol=1e-6)
    assert torch.allclose(posthoc.energy(logits), -EnergyBased.score(logits), atol=1e-5)
    assert torch.allclose(posthoc.energy(logits, 3.0), -EnergyBased.score(logits, 3.0), atol=1e-5)
    assert torch.allclose(posthoc.maxlogit(logits), -MaxLogit.score(logits))


def test_knn_score_equals_pytorch_ood_and_brute_force() -> None:
    g = torch.Generator().manual_seed(1)
    train, query = torch.randn(300, 24, generator=g), torch.randn(40, 24, generator=g) * 3
    ours = posthoc.knn_score(query, train, k=50)
    ref = (
        KNN(None, k=50)
        .fit_features(train, torch.zeros(300, dtype=torch.long))
        .predict_features(query)
    )
    assert torch.allclose(-ours.double(), ref.double() ** 2, atol=1e-5)
    n = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    kth = (torch.cdist(n(query).double(), n(train).double()) ** 2).sort(dim=1).values[:, 49]
    assert torch.allclose(-ours.double(), kth, atol=1e-5)


def test_sd_vote_score_equals_direct_transcription() -> None:
    g = torch.Generator().manual_seed(2)
    train, outl, query = (
        torch.randn(120, 8, generator=g),
        torch.randn(80, 8, generator=g),
        torch.randn(30, 8, generator=g),
    )
    got = posthoc.sd_vote_score(query, train, outl, k=10, alpha=0.3)
    n = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    q, tr, ou = n(query).double(), n(train).double(), n(outl).double()
    d_id = torch.cdist(q, tr) ** 2
    pooled = torch.cat([d_id, torch.cdist(q, ou) ** 2], dim=1)
    is_out = torch.cat([torch.zeros(120), torch.ones(80)]).double()
    votes = is_out[pooled.argsort(dim=1)[:, :10]].sum(dim=1)
    want = -(d_id.sort(dim=1).values[:, :10].sum(dim=1) + 0.3 * votes)
    assert torch.allclose(got.double(), want, atol=1e-5)
    assert (votes > 0).any() and (votes < 10).any()  # the vote term is exercised
