"""Video instance association for VIS: bi-softmax matching of instance embeddings against an EMA track memory."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from models.config import TrackerConfig
from models.temporal import TrackerState


def bi_softmax(logits: torch.Tensor) -> torch.Tensor:
    """(M, K) detection-track logits -> mean of the row-wise and column-wise softmax."""
    return 0.5 * (logits.softmax(dim=1) + logits.softmax(dim=0))


def associate(
    cfg: TrackerConfig,
    state: TrackerState,
    embeddings: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, TrackerState]:
    """Give each detection a track id (-1: neither matched nor strong enough to start a track)."""
    embeddings = torch.nn.functional.normalize(embeddings.detach().float().cpu(), dim=-1)
    scores, labels = scores.detach().cpu(), labels.detach().cpu()
    ids = torch.full((embeddings.shape[0],), -1, dtype=torch.long)
    memory = state.embeddings.clone() if state.embeddings.numel() else embeddings.new_zeros(0, embeddings.shape[1])
    matched_tracks: set[int] = set()
    if memory.shape[0] and embeddings.shape[0]:
        cosine = embeddings @ memory.T
        similarity = bi_softmax(cosine / cfg.temperature)
        rows, cols = linear_sum_assignment((-similarity).numpy())
        for det, trk in zip(rows.tolist(), cols.tolist()):
            if similarity[det, trk] >= cfg.match_threshold and cosine[det, trk] >= cfg.min_cosine:
                ids[det] = state.ids[trk]
                matched_tracks.add(trk)
                memory[trk] = torch.nn.functional.normalize(
                    cfg.momentum * memory[trk] + (1 - cfg.momentum) * embeddings[det], dim=0
                )
    misses = state.misses.clone() + 1
    for trk in matched_tracks:
        misses[trk] = 0
    alive = misses <= cfg.max_age
    new_embeddings, new_ids = [memory[alive]], [state.ids[alive]]
    new_labels, new_misses = [state.labels[alive]], [misses[alive]]
    next_id = state.next_id
    for det in range(embeddings.shape[0]):
        if ids[det] < 0 and scores[det] >= cfg.birth_score:
            ids[det] = next_id
            new_embeddings.append(embeddings[det : det + 1])
            new_ids.append(torch.tensor([next_id]))
            new_labels.append(labels[det : det + 1].long().cpu())
            new_misses.append(torch.zeros(1, dtype=torch.long))
            next_id += 1
    updated = TrackerState(
        embeddings=torch.cat(new_embeddings), ids=torch.cat(new_ids), labels=torch.cat(new_labels),
        misses=torch.cat(new_misses), next_id=next_id,
    )
    return ids, updated
