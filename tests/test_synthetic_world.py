"""Properties of the synthetic referring-video world: determinism, valid ground truth, unambiguous prompts,
held-out combinations kept out of training, and every task kind present."""

from __future__ import annotations

import re
from collections import Counter

import cv2
import numpy as np
import pytest

from models.config import VisualPromptConfig
from operators.prompt_spec import Region
from operators.synthetic import (Clip, WorldConfig, anchors, held_out, iter_split, make_background_clip, make_clip,
                                 novelty, resolve, vocabulary)
from operators.synthetic.predicates import DIRECTIONS, SPATIAL_DIRECTIONS
from operators.synthetic.templates import QUERIES, VISUAL_MODES
from operators.synthetic.vocab import COLOURS, SHAPES, SIZES, TEXTURES

CONFIG = WorldConfig()
# Small frames and short clips where many seeds are needed; the logic under test does not depend on size.
SMALL = WorldConfig(height=64, width=64, num_frames=5)
CLIPS_PER_SPLIT = 24
MANY_SEEDS = 250


@pytest.fixture(scope="module")
def clips() -> dict[str, list[Clip]]:
    return {split: list(iter_split(split, CONFIG, count=CLIPS_PER_SPLIT)) for split in ("train", "test")}


@pytest.fixture(scope="module")
def small_train() -> list[Clip]:
    return [make_clip(seed, split, SMALL) for split in ("train", "val") for seed in range(MANY_SEEDS)]


def all_clips(clips: dict[str, list[Clip]]) -> list[Clip]:
    return clips["train"] + clips["test"]


def language(clip: Clip):
    return [p for p in clip.prompts if p.kind in ("referring", "reasoning")]


def test_same_seed_gives_identical_clips() -> None:
    first, second = make_clip(7, "train", CONFIG), make_clip(7, "train", CONFIG)
    for name in ("frames", "masks", "boxes", "centres", "in_frame", "occlusion"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert first.objects == second.objects
    assert [(p.kind, p.subkind, p.template_id, p.text, p.targets, p.classes) for p in first.prompts] == \
        [(p.kind, p.subkind, p.template_id, p.text, p.targets, p.classes) for p in second.prompts]
    for a, b in zip(first.prompts, second.prompts):
        assert all(np.array_equal(u.data, v.data) for u, v in zip(a.visual, b.visual))


def test_seeds_and_splits_give_different_clips() -> None:
    base = make_clip(3, "train", SMALL)
    assert not np.array_equal(base.frames, make_clip(4, "train", SMALL).frames)
    assert not np.array_equal(base.frames, make_clip(3, "test", SMALL).frames)


def test_unknown_split_and_out_of_range_seed_are_rejected() -> None:
    with pytest.raises(KeyError):
        make_clip(0, "dev", SMALL)
    with pytest.raises(ValueError):
        make_clip(-1, "train", SMALL)


def test_array_shapes_dtypes_and_attributes(clips: dict[str, list[Clip]]) -> None:
    for clip in all_clips(clips):
        count = len(clip.objects)
        assert CONFIG.min_objects <= count <= CONFIG.max_objects
        assert clip.frames.shape == (CONFIG.num_frames, CONFIG.height, CONFIG.width, 3)
        assert clip.frames.dtype == np.uint8
        assert clip.masks.shape == (CONFIG.num_frames, count, CONFIG.height, CONFIG.width)
        assert clip.masks.dtype == bool
        assert clip.boxes.shape == (CONFIG.num_frames, count, 4)
        assert clip.centres.shape == (CONFIG.num_frames, count, 2)
        assert clip.in_frame.shape == clip.occlusion.shape == (CONFIG.num_frames, count)
        for obj in clip.objects:
            assert (obj.shape in SHAPES and obj.colour in COLOURS and obj.size in SIZES
                    and obj.texture in TEXTURES)
        assert clip.classes == tuple(o.shape for o in clip.objects)


def test_masks_are_disjoint_and_boxes_enclose_them(clips: dict[str, list[Clip]]) -> None:
    for clip in all_clips(clips):
        assert clip.masks.sum(axis=1).max() <= 1
        for t, i in np.ndindex(clip.masks.shape[:2]):
            ys, xs = np.nonzero(clip.masks[t, i])
            expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0]
            assert clip.boxes[t, i].tolist() == expected
        # An object is only visible where it is in frame, and occlusion is a share.
        assert not (clip.visible_px > 0)[~clip.in_frame].any()
        assert ((clip.occlusion >= 0) & (clip.occlusion <= 1)).all()


def test_objects_enter_leave_and_occlude(clips: dict[str, list[Clip]]) -> None:
    clip_list = all_clips(clips)
    enters = sum(int((~c.in_frame[0] & c.in_frame[-1]).sum()) for c in clip_list)
    leaves = sum(int((c.in_frame[0] & ~c.in_frame[-1]).sum()) for c in clip_list)
    heavily_occluded = sum(int((c.occlusion > 0.3).any()) for c in clip_list)
    assert enters > 0 and leaves > 0 and heavily_occluded > 0
    # An occluded object is hidden by one drawn later (in front): the topmost object is never occluded.
    assert all((c.occlusion[:, -1] == 0).all() for c in clip_list)


def test_every_language_prompt_resolves_to_exactly_one_visible_object(clips: dict[str, list[Clip]]) -> None:
    for clip in all_clips(clips):
        for prompt in language(clip):
            assert len(prompt.targets) == 1 and prompt.query is not None and prompt.text
            assert resolve(prompt.query, clip, CONFIG) == prompt.targets, prompt.text
            assert clip.visible_px[:, prompt.targets[0]].max() >= CONFIG.min_visible_px


def test_attribute_words_name_exactly_one_object(clips: dict[str, list[Clip]]) -> None:
    """Independent of the generator's resolver: read the attribute words back from the text."""
    words = {name: set(values) for name, values in
             (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("texture", TEXTURES))}
    checked = 0
    for clip in all_clips(clips):
        for prompt in (p for p in clip.prompts if p.subkind == "attribute"):
            said = set(re.findall(r"[a-z]+", prompt.text))
            matching = [i for i, obj in enumerate(clip.objects)
                        if all(obj.attribute(name) in said for name, vocab in words.items() if vocab & said)]
            assert matching == list(prompt.targets), prompt.text
            checked += 1
    assert checked > 0


def test_the_anchor_is_the_one_object_the_expression_names_beside_its_referent(clips: dict[str, list[Clip]]) -> None:
    """"the circle left of the square", "the shape with the same colour as the star": one object has every attribute
    word of the anchor's description, it is not the referent, and for "same X as" it shares X with the referent."""
    named = Counter()
    for clip in all_clips(clips):
        for prompt in language(clip):
            found = anchors(prompt.query, clip, CONFIG)
            if prompt.query.anchor is None:
                assert found == ()
                continue
            assert len(found) == 1 and found[0] not in prompt.targets, prompt.text
            anchor = clip.objects[found[0]]
            assert all(value in prompt.text for _, value in prompt.query.anchor), prompt.text
            if prompt.query.name.startswith("reasoning.same_"):
                shared = prompt.query.name.removeprefix("reasoning.same_")
                assert anchor.attribute(shared) == clip.objects[prompt.targets[0]].attribute(shared), prompt.text
            named[prompt.query.name.split(".")[0]] += 1
    assert named["spatial"] > 0 and named["reasoning"] > 0


def test_spatial_and_direction_prompts_hold_in_the_geometry(clips: dict[str, list[Clip]]) -> None:
    """Independent of the resolver: relations hold in every frame both objects show; directions match the
    net displacement."""
    checked = 0
    for clip in all_clips(clips):
        visible = clip.visible_px >= CONFIG.min_visible_px
        for prompt in language(clip):
            family, relation = prompt.query.name.split(".")
            target = prompt.targets[0]
            if family == "spatial":
                anchor = next(i for i in range(len(clip.objects)) if i != target and all(
                    clip.objects[i].attribute(k) == v for k, v in prompt.query.anchor))
                both = visible[:, target] & visible[:, anchor]
                offset = (clip.centres[both, target] - clip.centres[both, anchor]) @ np.array(
                    DIRECTIONS[SPATIAL_DIRECTIONS[relation]])
                assert both.any() and (offset > 0).all(), prompt.text
                checked += 1
            if relation.startswith("moving_"):
                net = clip.centres[-1, target] - clip.centres[0, target]
                assert net @ np.array(DIRECTIONS[relation.removeprefix("moving_")]) > np.abs(net).min()
                checked += 1
    assert checked > 0


def test_every_task_kind_and_subkind_appears(clips: dict[str, list[Clip]]) -> None:
    seen = Counter((p.kind, p.subkind) for clip in all_clips(clips) for p in clip.prompts)
    expected = {(spec.kind, spec.subkind) for spec in QUERIES}
    expected |= {("generic", s) for s in ("panoptic", "semantic", "instance")}
    expected |= {("visual", mode) for mode in VISUAL_MODES}
    assert expected <= set(seen)
    used = {p.template_id for clip in clips["test"] for p in clip.prompts}
    assert used & held_out().templates  # test prompts do use held-out phrasings


def test_held_out_combinations_never_reach_train_or_val(small_train: list[Clip],
                                                        clips: dict[str, list[Clip]]) -> None:
    hidden = held_out()
    for clip in small_train + clips["train"]:
        for obj in clip.objects:
            assert obj.shape not in hidden.shapes
            assert (obj.colour, obj.shape) not in hidden.colour_shape
        for prompt in clip.prompts:
            assert prompt.template_id not in hidden.templates
            assert not set(prompt.classes) & set(hidden.shapes)
            assert novelty(prompt, clip) == ()


def test_test_split_contains_held_out_combinations() -> None:
    clips = [make_clip(seed, "test", SMALL) for seed in range(60)]
    hidden = held_out()
    objects = [o for c in clips for o in c.objects]
    assert any(o.shape in hidden.shapes for o in objects)
    assert any((o.colour, o.shape) in hidden.colour_shape for o in objects)
    reasons = {r for c in clips for p in c.prompts for r in novelty(p, c)}
    assert reasons == {"template", "class", "colour_shape"}
    assert set(hidden.shapes) <= set(vocabulary("test")) and not set(hidden.shapes) & set(vocabulary("train"))


def test_generic_prompts_list_classes_and_target_their_objects(clips: dict[str, list[Clip]]) -> None:
    for split, clip_list in clips.items():
        for clip in clip_list:
            for prompt in (p for p in clip.prompts if p.kind == "generic"):
                assert set(prompt.classes) <= set(vocabulary(split)) and prompt.text == ", ".join(prompt.classes)
                assert prompt.targets == tuple(i for i, c in enumerate(clip.classes) if c in prompt.classes)
                if prompt.subkind != "instance":
                    assert prompt.classes == vocabulary(split)


def test_visual_prompts_lie_on_the_first_frame_target(clips: dict[str, list[Clip]]) -> None:
    for clip in all_clips(clips):
        shown = tuple(np.flatnonzero(clip.visible_px[0] >= CONFIG.min_visible_px).tolist())
        for prompt in (p for p in clip.prompts if p.kind == "visual"):
            assert len(prompt.visual) == len(prompt.targets)
            if len(prompt.targets) > 1:
                assert prompt.targets == shown
            for target, visual in zip(prompt.targets, prompt.visual):
                mask = clip.masks[0, target]
                assert visual.frame == 0 and visual.mode == prompt.subkind
                if visual.mode == "mask":
                    assert np.array_equal(visual.data, mask)
                elif visual.mode == "box":
                    assert np.array_equal(visual.data, clip.boxes[0, target])
                    assert np.array_equal(visual.as_mask(CONFIG.height, CONFIG.width) & mask, mask)
                else:
                    xs, ys = visual.data.round().astype(int).T
                    assert mask[ys, xs].all() and len(visual.data) >= 2
                    assert visual.as_mask(CONFIG.height, CONFIG.width)[ys, xs].all()


def test_background_clip_has_no_objects_and_shares_the_background() -> None:
    config = WorldConfig(blur_prob=0.0)
    negative, positive = make_background_clip(5, "train", config), make_clip(5, "train", config)
    assert negative.masks.shape[1] == 0 and not negative.objects
    assert all(p.kind == "generic" and p.targets == () for p in negative.prompts)
    covered = positive.masks.any(axis=1)
    away = ~np.stack([cv2.dilate(c.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) for c in covered])
    assert np.array_equal(negative.frames[away], positive.frames[away])


def test_training_draws_visual_prompts_as_serving_does() -> None:
    """A synthetic prompt rasterises to the same pixels as the Region a client would send for it, so the model
    trains on the prompts it is served (boxes end exclusively here and inclusively in a Region)."""
    clip = make_clip(3, "train", CONFIG)
    size, cfg = (CONFIG.height, CONFIG.width), VisualPromptConfig()
    drawn = 0
    for visual in (v for p in clip.prompts if p.kind == "visual" for v in p.visual):
        if visual.mode == "mask":
            continue
        if visual.mode == "box":
            region = Region(box=tuple((visual.data - [0, 0, 1, 1]).tolist()))
        else:
            region = Region(**{visual.mode: tuple(map(tuple, visual.data.tolist()))})
        assert np.array_equal(visual.as_mask(*size, cfg), region.rasterise(size, cfg).numpy()), visual.mode
        drawn += 1
    assert drawn >= 3
