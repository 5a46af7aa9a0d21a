"""The relation layers before the refer score: mask geometry by hand, what the layers attend to, and that they
learn a comparison that no per-query score can make."""

from __future__ import annotations

import dataclasses
import math

import torch

from models.build import build_hyperseg
from models.checkpoint import load_checkpoint, save_checkpoint
from models.predictor import PromptScoreHead
from models.presets import preset_config
from models.relation import QueryRelations, mask_geometry


def _block_masks(boxes: list[tuple[int, int, int, int]], size: tuple[int, int] = (4, 8)) -> torch.Tensor:
    """(1, len(boxes), h, w) logits, +20 inside each (y0, y1, x0, x1) box and -20 elsewhere."""
    masks = torch.full((1, len(boxes), *size), -20.0)
    for q, (y0, y1, x0, x1) in enumerate(boxes):
        masks[0, q, y0:y1, x0:x1] = 20.0
    return masks


def test_mask_geometry_by_hand():
    """A 2 x 4 block of a 4 x 8 grid: half the side of the frame's area, centred; one cell: its centre; an empty
    mask, faint or of exact zeros: no area, spread over the whole frame. (The -20 logits around a mask add about 1e-4
    of spread.)"""
    masks = torch.cat([_block_masks([(1, 3, 2, 6), (0, 1, 0, 1), (0, 0, 0, 0)]), torch.full((1, 1, 4, 8), -1e4)], 1)
    geometry = mask_geometry(masks)[0]
    # x cell centres 2.5..5.5 / 8 -> variance of (-3, -1, 1, 3) / 16 = 5 / 256; y: (-1, 1) / 8 -> 1 / 64
    assert torch.allclose(geometry[0], torch.tensor([math.sqrt(8 / 32), 0.5, 0.5, math.sqrt(5 / 256), 1 / 8]),
                          atol=1e-3)
    assert torch.allclose(geometry[1], torch.tensor([math.sqrt(1 / 32), 1 / 16, 1 / 8, 0.0, 0.0]), atol=1e-3)
    uniform = torch.tensor([0.0, 0.5, 0.5, math.sqrt((8**2 - 1) / 12) / 8, math.sqrt((4**2 - 1) / 12) / 4])
    assert torch.allclose(geometry[2], uniform, atol=1e-4) and torch.allclose(geometry[3], uniform, atol=1e-6)


def test_relations_read_the_other_queries_masks_and_ignore_padded_prompts():
    torch.manual_seed(0)
    relations = QueryRelations(dim=16, num_heads=2, dim_feedforward=32, num_layers=1).eval()
    queries, prompts = torch.randn(1, 3, 16), torch.randn(1, 2, 16)
    valid = torch.tensor([[True, False]])
    masks = _block_masks([(0, 2, 0, 2), (2, 4, 4, 8), (1, 3, 2, 4)])
    out = relations(queries, masks, prompts, valid)

    moved = _block_masks([(0, 2, 0, 2), (0, 2, 6, 8), (1, 3, 2, 4)])  # only query 1's mask moves
    assert not torch.allclose(relations(queries, moved, prompts, valid)[0, 0], out[0, 0], atol=1e-4)
    padded = prompts.clone()
    padded[0, 1] = 100.0
    assert torch.allclose(relations(queries, masks, padded, valid), out, atol=1e-5)
    order = torch.tensor([2, 0, 1])  # no query order is built in: permuting the queries permutes the output
    assert torch.allclose(relations(queries[:, order], masks[:, order], prompts, valid), out[:, order], atol=1e-5)


def _leftmost_batch(generator: torch.Generator, batch: int, count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of `count` one-column objects at random distinct columns of a 4 x 16 grid; target 1 for the leftmost."""
    columns = torch.stack([torch.randperm(16, generator=generator)[:count] for _ in range(batch)])
    masks = torch.full((batch, count, 4, 16), -20.0)
    masks.scatter_(3, columns[:, :, None, None].expand(-1, -1, 4, 1), 20.0)
    return masks, (columns == columns.min(dim=1, keepdim=True).values).float()


def test_relations_learn_which_object_is_leftmost_where_a_per_query_score_cannot():
    """Query states are all equal, so only the masks tell the objects apart. "Leftmost" depends on where the others
    are: a score from each query's own geometry must use one fixed column threshold and gets many samples wrong;
    with one relation layer the score compares, and nearly every sample is right."""
    dim, count = 16, 4

    def train(with_relations: bool) -> float:
        torch.manual_seed(0)
        relations = QueryRelations(dim, num_heads=2, dim_feedforward=32, num_layers=1)
        head = PromptScoreHead(dim, background=False)
        prompt = torch.nn.Parameter(torch.randn(1, 1, dim))
        optimiser = torch.optim.Adam([*relations.parameters(), *head.parameters(), prompt], lr=3e-3)
        generator = torch.Generator().manual_seed(1)

        def scores(masks: torch.Tensor) -> torch.Tensor:
            queries = torch.zeros(masks.shape[0], count, dim)
            prompts, valid = prompt.expand(masks.shape[0], -1, -1), torch.ones(masks.shape[0], 1, dtype=torch.bool)
            states = (relations(queries, masks, prompts, valid) if with_relations
                      else queries + relations.geometry(mask_geometry(masks)))
            return head(states, prompts, valid)[..., 0]

        for _ in range(300):
            masks, wanted = _leftmost_batch(generator, 64)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scores(masks), wanted)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        masks, wanted = _leftmost_batch(torch.Generator().manual_seed(2), 500)
        with torch.no_grad():
            return float(((scores(masks) > 0) == (wanted > 0)).all(dim=1).float().mean())

    per_query, related = train(False), train(True)
    assert related > 0.9
    assert per_query < 0.75


def test_a_model_with_relation_layers_round_trips_and_older_configs_have_none(tmp_path):
    cfg = preset_config("tiny")
    assert cfg.predictor.relation_layers == 0  # the paper's refer score, and every checkpoint saved before
    cfg.predictor = dataclasses.replace(cfg.predictor, relation_layers=1)
    torch.manual_seed(0)
    model = build_hyperseg(cfg)
    assert len(model.predictor.relations.layers.layers) == 1
    save_checkpoint(model, tmp_path)
    loaded, report = load_checkpoint(tmp_path)
    assert report.complete and loaded.cfg.predictor.relation_layers == 1
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
