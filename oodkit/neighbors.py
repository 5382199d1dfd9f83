"""Exact k-nearest-neighbour search with bounded memory (squared L2 distances).

Backends: ``faiss`` (faiss-cpu's exact ``IndexFlatL2``, for CPU tensors) and ``torch`` (a
chunked matrix product on any device, keeping a running top-k, so memory grows with the
chunk sizes, never with queries × references). ``auto`` uses faiss on the CPU when it is
installed and torch otherwise.
"""

from __future__ import annotations

import torch

BACKENDS = ("auto", "torch", "faiss")


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _torch_search(
    queries: torch.Tensor, refs: torch.Tensor, k: int, query_chunk: int, ref_chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    ref_sq = (refs * refs).sum(1)
    all_d, all_i = [], []
    for qs in range(0, len(queries), query_chunk):
        q = queries[qs : qs + query_chunk]
        q_sq = (q * q).sum(1, keepdim=True)
        best_d = q.new_empty((len(q), 0))
        best_i = torch.empty((len(q), 0), dtype=torch.long, device=q.device)
        for rs in range(0, len(refs), ref_chunk):
            r = refs[rs : rs + ref_chunk]
            d = torch.addmm(q_sq + ref_sq[rs : rs + ref_chunk], q, r.T, alpha=-2.0).clamp_(min=0)
            d_k, i_k = d.topk(min(k, d.shape[1]), dim=1, largest=False)
            best_d = torch.cat([best_d, d_k], dim=1)
            best_i = torch.cat([best_i, i_k + rs], dim=1)
            if best_d.shape[1] > k:
                best_d, pos = best_d.topk(k, dim=1, largest=False)
                best_i = best_i.gather(1, pos)
        order = best_d.argsort(dim=1)
        all_d.append(best_d.gather(1, order))
        all_i.append(best_i.gather(1, order))
    return torch.cat(all_d), torch.cat(all_i)


def _faiss_search(
    queries: torch.Tensor, refs: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    import faiss

    index = faiss.IndexFlatL2(refs.shape[1])
    index.add(refs.detach().float().contiguous().numpy())
    dist, idx = index.search(queries.detach().float().contiguous().numpy(), k)
    return torch.from_numpy(dist).clamp_(min=0), torch.from_numpy(idx).long()


def knn_search(
    queries: torch.Tensor,
    refs: torch.Tensor,
    k: int,
    *,
    backend: str = "auto",
    query_chunk: int = 1024,
    ref_chunk: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared L2 distances [Q, k] (ascending) and indices of the k nearest rows of ``refs``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}")
    if not 1 <= k <= len(refs):
        raise ValueError(f"k = {k} must lie in 1..{len(refs)} (the number of references)")
    if backend == "auto":
        backend = "faiss" if queries.device.type == "cpu" and _faiss_available() else "torch"
    if backend == "faiss":
        return _faiss_search(queries, refs, k)
    with torch.no_grad():
        return _torch_search(queries, refs, k, query_chunk, ref_chunk)
