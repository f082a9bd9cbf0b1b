"""Memory reading and multi-object merging (spec §1.6 Eq. 3, §1.10).

Affinity: the scaled negative squared L2 distance between memory keys K and query keys Q,
d(K_i, Q_j) = (2 K_i.Q_j - |K_i|^2) / sqrt(C_k) (|Q_j|^2 is constant over i and dropped),
softmax over memory positions after a top-k filter. Computed in fp32, in chunks of query
positions, and applied by gathering the k selected values (no dense T*n x n product).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def read_memory(
    query_key: torch.Tensor,
    memory_key: torch.Tensor,
    memory_value: torch.Tensor,
    top_k: int,
    chunk_size: int,
) -> torch.Tensor:
    """query_key [C_k, n]; memory_key [C_k, M]; memory_value [O, C_v, M] -> readout [O, C_v, n].

    The affinity A is shared by all objects. k is clamped to M, so a memory with fewer
    positions than top_k still gives a proper softmax.
    """
    ck, n = query_key.shape
    m = memory_key.shape[1]
    k = min(top_k, m)
    # d = (2 K.Q - |K|^2) / sqrt(C_k) as ONE product of augmented matrices:
    # [2 s Q ; s]^T [K ; -|K|^2], so no extra passes over the large [c, M] logits.
    scale = 1.0 / math.sqrt(ck)
    mk = memory_key.float()
    mk_aug = torch.cat([mk, -mk.pow(2).sum(0, keepdim=True)], 0)  # [C_k + 1, M]
    objects, cv = memory_value.shape[0], memory_value.shape[1]
    values = memory_value.transpose(1, 2)  # [O, M, C_v] view; gathering along M measured best
    # The gathered values are [O, c, k, C_v]: bound them (32 M elements) as well as the
    # [c, M] logits, so many objects or wide values cannot exhaust memory.
    gather_budget = 32 * 1024 * 1024
    chunk_size = max(1, min(chunk_size, gather_budget // max(objects * k * cv, 1)))
    outs: list[torch.Tensor] = []
    for start in range(0, n, chunk_size):
        q = query_key[:, start : start + chunk_size].float()  # [C_k, c]
        q_aug = torch.cat([q * (2.0 * scale), torch.full_like(q[:1], scale)], 0)
        logits = q_aug.t() @ mk_aug  # [c, M]
        top_logits, top_idx = logits.topk(k, dim=1)  # [c, k]
        weights = top_logits.softmax(dim=1)
        c = q.shape[1]
        gathered = values[:, top_idx.flatten()].view(objects * c, k, cv).float()
        mixed = torch.bmm(weights.expand(objects, c, k).reshape(objects * c, 1, k), gathered)
        outs.append(mixed.view(objects, c, cv).transpose(1, 2))
    return torch.cat(outs, 1)  # fp32


def aggregate_logits(probs: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """STCN soft aggregation in logit form: per-object sigmoids [.., O, ..] along ``dim`` ->
    logits [.., O+1, ..] with the background (prod(1 - p)) first; softmax gives probabilities."""
    background = torch.prod(1 - probs, dim=dim, keepdim=True)
    stacked = torch.cat([background, probs], dim).clamp(1e-7, 1 - 1e-7)
    return torch.log(stacked / (1 - stacked))


def soft_aggregate(probs: torch.Tensor) -> torch.Tensor:
    """probs: [O, H, W] per-object sigmoids -> [O+1, H, W] probabilities (background first)."""
    return F.softmax(aggregate_logits(probs, 0), dim=0)
