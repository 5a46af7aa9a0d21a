"""Training: samples from the synthetic world, loss going down on a fixed batch, determinism by seed, and exact
resume from a checkpoint (model, optimiser, schedule, RNG)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from models.build import build_hyperseg
from models.checkpoint import load_checkpoint
from models.config import VisualPromptConfig
from models.losses import NOT_REFERRED, REFERRED
from models.presets import preset_config
from models.training import TRAIN_CONFIG_FILE, TRAINING_STATE_FILE, OptimConfig, Trainer, WarmupCosine
from operators.synthetic import WorldConfig, anchors, make_clip
from operators.synthetic.vocab import ATTRIBUTE_VOCABULARIES
from operators.training_samples import (TEMPORAL_SUBKINDS, SampleConfig, TaskMix, attribute_classes, batch_for_step,
                                       sample_from_prompt)
from pipeline.train import build_parser, parse_mix, run_config, sample_config
from pipeline.train import main as train_main

SAMPLES = SampleConfig(image_batch_size=1, clip_batch_size=1, clip_frames=2)
OPTIM = OptimConfig(steps=20, lr=1e-3, warmup_steps=1)


def _trainer(seed: int = 0) -> Trainer:
    cfg = preset_config("tiny")
    cfg.frozen = ()
    cfg.language.train_base = True
    torch.manual_seed(seed)
    return Trainer(build_hyperseg(cfg), OPTIM)


def _batch_of(cfg: SampleConfig, clips: bool, step: int = 0):
    """The batch of the first step at or after `step` whose batch is clips (or images)."""
    while (len(batch_for_step(cfg, 0, step)[0]) > 1) != clips:
        step += 1
    return batch_for_step(cfg, 0, step)


def test_batches_are_a_pure_function_of_seed_and_step():
    first, again = batch_for_step(SAMPLES, 0, 3), batch_for_step(SAMPLES, 0, 3)
    assert [s.prompt.key() for s in first] == [s.prompt.key() for s in again]
    assert all(torch.equal(a.frames, b.frames) for a, b in zip(first, again))
    other = batch_for_step(SAMPLES, 1, 3)
    assert not all(torch.equal(a.frames, b.frames) for a, b in zip(first, other))


def test_samples_carry_consistent_targets():
    only = SampleConfig(mix=TaskMix(referring=0, reasoning=0, generic=1, visual=0), image_batch_size=2,
                        clip_batch_size=2, clip_frames=2)
    for sample in _batch_of(only, clips=True) + _batch_of(SampleConfig(mix=TaskMix(0, 0, 0, 1)), clips=False):
        for target, ids in zip(sample.targets, sample.object_ids):
            assert target.masks.shape[0] == target.prompt_index.shape[0] == ids.shape[0]
            assert all(bool(mask.any()) for mask in target.masks)
        if sample.prompt.task == "generic":
            for target, entities in zip(sample.targets, sample.entities):
                assert set(entities) == {sample.prompt.classes[i] for i in target.prompt_index.tolist()}
        else:
            assert sample.region_frame is not None and len(sample.prompt.regions) >= 1
    images = SampleConfig(mix=TaskMix(referring=1, reasoning=1, generic=0, visual=0), image_batch_size=8)
    texts = [s.prompt.text for s in _batch_of(images, clips=False)]
    assert not any(word in text for text in texts for word in ("moving", "fastest", "leave", "stops"))
    assert "motion" in TEMPORAL_SUBKINDS


def test_steps_reduce_the_loss_on_a_fixed_batch_and_repeat_by_seed():
    batch = _batch_of(SAMPLES, clips=True)
    trainer = _trainer()
    losses = [trainer.train_step(batch).losses for _ in range(3)]
    assert "instance" in losses[0] or all(s.prompt.task in ("referring", "reasoning") for s in batch)
    assert losses[-1]["total"] < losses[0]["total"]
    again = _trainer()
    assert [again.train_step(batch).losses["total"] for _ in range(2)] == [r["total"] for r in losses[:2]]


def test_resume_reproduces_the_next_step(tmp_path):
    batches = [_batch_of(SAMPLES, clips=False), _batch_of(SAMPLES, clips=True), _batch_of(SAMPLES, clips=False, step=5)]
    trainer = _trainer()
    for batch in batches[:2]:
        trainer.train_step(batch)
    trainer.save(tmp_path / "ckpt")
    expected = trainer.train_step(batches[2])
    resumed = Trainer.resume(tmp_path / "ckpt", OPTIM)
    assert resumed.step_index == 2
    got = resumed.train_step(batches[2])
    assert got.lr == expected.lr
    assert got.losses == pytest.approx(expected.losses, rel=1e-5)


def test_schedule_warms_up_then_decays():
    schedule = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.55) and schedule(110) == pytest.approx(0.1)


def test_task_mix_parsing():
    assert parse_mix("referring=1,visual=0") == TaskMix(referring=1.0, visual=0.0)
    with pytest.raises(Exception, match="bad task mix"):
        parse_mix("colour=1")
    with pytest.raises(ValueError, match="positive sum"):
        TaskMix(0, 0, 0, 0).kinds()


def test_command_line_choices_reach_the_run_config():
    default = run_config(build_parser().parse_args(["--preset", "tiny-lite0-rank"]))
    assert default.loss.refer_rank_weight == 2.0 and default.frozen == () and default.language.train_base
    chosen = run_config(build_parser().parse_args(["--preset", "tiny-lite0-rank", "--refer-rank-weight", "0.5",
                                                   "--freeze-encoders", "--lora-only"]))
    assert chosen.loss.refer_rank_weight == 0.5 and chosen.frozen == preset_config("tiny-lite0-rank").frozen != ()
    assert not chosen.language.train_base
    assert chosen.loss.refer_weight == default.loss.refer_weight
    assert default.loss.attribute_weight == 0 and default.predictor.attribute_classes == ()
    attribute = run_config(build_parser().parse_args(["--preset", "tiny", "--attribute-weight", "0.5"]))
    assert attribute.loss.attribute_weight == 0.5 and attribute.predictor.attribute_classes == (8, 8, 2, 3)
    assert default.loss.kinematics_weight == 0 and not default.predictor.kinematics_head
    kinematics = run_config(build_parser().parse_args(["--preset", "tiny", "--kinematics-weight", "2"]))
    assert kinematics.loss.kinematics_weight == 2 and kinematics.predictor.kinematics_head
    assert default.predictor.attribute_match_weight == 1.0 and not default.predictor.refer_attribute_match
    match = run_config(build_parser().parse_args(["--preset", "tiny", "--attribute-weight", "1",
                                                  "--refer-attribute-match", "--attribute-match-weight", "3"]))
    assert match.predictor.refer_attribute_match and match.predictor.attribute_match_weight == 3.0
    with pytest.raises(ValueError, match="--attribute-match-weight needs --refer-attribute-match"):
        run_config(build_parser().parse_args(["--preset", "tiny", "--attribute-match-weight", "3"]))
    assert default.predictor.relation_layers == 0
    relations = run_config(build_parser().parse_args(["--preset", "tiny", "--relation-layers", "2"]))
    assert relations.predictor.relation_layers == 2
    with pytest.raises(ValueError, match="--relation-layers"):
        run_config(build_parser().parse_args(["--preset", "tiny", "--relation-layers", "-1"]))


def test_targets_carry_each_objects_attributes_and_kinematics_and_the_heads_learn_them():
    """Every target row names its object's colour, shape, size and texture, and its centre (fractions of the
    frame) and velocity (in units of the world's top speed, unknown on the sample's first frame); the flags build the
    two heads, and steps on a fixed batch lower both auxiliary losses."""
    clip = make_clip(0, "train")
    prompt = next(p for p in clip.prompts if p.kind == "generic")
    sample = sample_from_prompt(clip, prompt, 3, 2, VisualPromptConfig())
    side = clip.frames.shape[1]  # square frames
    assert all(ids.numel() for ids in sample.object_ids)  # the checks below see objects on both frames
    for offset, (target, ids) in enumerate(zip(sample.targets, sample.object_ids)):
        t = 3 + offset
        for row, kinematics, i in zip(target.attributes.tolist(), target.kinematics, ids.tolist()):
            assert [values[v] for values, v in zip(ATTRIBUTE_VOCABULARIES.values(), row)] == [
                clip.objects[i].colour, clip.objects[i].shape, clip.objects[i].size, clip.objects[i].texture]
            assert torch.allclose(kinematics[:2], torch.from_numpy(clip.centres[t, i] / side))
            if offset == 0:
                assert kinematics[2:].isnan().all()
            else:
                moved = (clip.centres[t, i] - clip.centres[t - 1, i]) / (side * WorldConfig.max_speed)
                assert torch.allclose(kinematics[2:], torch.from_numpy(moved))
    cfg = run_config(build_parser().parse_args(["--preset", "tiny", "--attribute-weight", "1",
                                                "--kinematics-weight", "1"]))
    torch.manual_seed(0)
    trainer = Trainer(build_hyperseg(cfg), OPTIM)
    batch = _batch_of(SAMPLES, clips=True)
    first = trainer.train_step(batch).losses
    for _ in range(5):
        last = trainer.train_step(batch).losses
    assert last["attribute"] < first["attribute"] and last["kinematics"] < first["kinematics"]
    assert trainer.model.predictor.attribute_head.out_features == sum(attribute_classes())


def test_jpeg_augmentation_codes_the_frames_and_keeps_the_targets():
    """The same draw with and without the augmentation: the same prompt and targets, frames close but not equal."""
    plain = batch_for_step(SAMPLES, 0, 3)[0]
    coded = batch_for_step(replace(SAMPLES, jpeg_share=1.0, jpeg_qualities=(40, 40)), 0, 3)[0]
    assert plain.prompt.key() == coded.prompt.key()
    assert all(torch.equal(a.masks, b.masks) for a, b in zip(plain.targets, coded.targets))
    error = (plain.frames.int() - coded.frames.int()).abs().float().mean()
    assert 0 < error < 10
    if plain.region_frame is not None:
        assert not torch.equal(plain.region_frame, coded.region_frame)
    args = build_parser().parse_args(["--jpeg-share", "0.5", "--jpeg-qualities", "60", "90"])
    assert (sample_config(args).jpeg_share, sample_config(args).jpeg_qualities) == (0.5, (60, 90))
    assert sample_config(build_parser().parse_args([])).jpeg_share == 0.0
    with pytest.raises(ValueError, match="jpeg_share"):
        SampleConfig(jpeg_share=1.5)
    with pytest.raises(ValueError, match="jpeg_qualities"):
        SampleConfig(jpeg_qualities=(90, 60))


@pytest.mark.parametrize("negatives", [True, False])
def test_referring_targets_show_the_referent_among_negatives(negatives):
    """With negatives, every visible object is a target and exactly the referent is labelled REFERRED; without,
    only the referent is a target."""
    clip = make_clip(0, "train")
    prompt = next(p for p in clip.prompts if p.kind == "referring" and p.subkind == "attribute")
    sample = sample_from_prompt(clip, prompt, 0, 3, VisualPromptConfig(), referring_negatives=negatives)
    for t, (target, ids) in enumerate(zip(sample.targets, sample.object_ids)):
        visible = [i for i in range(len(clip.objects)) if clip.visible_px[t, i] > 0]
        expected = visible if negatives else [i for i in visible if i in prompt.targets]
        assert ids.tolist() == expected
        labels = [REFERRED if i in prompt.targets else NOT_REFERRED for i in expected]
        assert target.prompt_index.tolist() == labels
        assert torch.equal(target.masks, torch.from_numpy(clip.masks[t, expected]))
    assert negatives == any(len(ids) > 1 for ids in sample.object_ids)


def test_referring_targets_mark_the_anchor_the_expression_names():
    """For "same X as" and spatial expressions exactly the objects that operators.synthetic.anchors finds are
    marked (never the referent); other referring prompts mark none, and other tasks carry no anchor column."""
    marked_kinds = set()
    for seed in range(6):
        clip = make_clip(seed, "train")
        for prompt in clip.prompts:
            sample = sample_from_prompt(clip, prompt, 0, 1, VisualPromptConfig())
            target, ids = sample.targets[0], sample.object_ids[0].tolist()
            if prompt.query is None:
                assert target.anchor is None
                continue
            named = anchors(prompt.query, clip, WorldConfig())
            assert target.anchor.tolist() == [i in named for i in ids]
            assert not set(named) & set(prompt.targets)
            if target.anchor.any():
                marked_kinds.add(prompt.subkind)
    assert marked_kinds == {"same_colour", "same_shape", "spatial"}


def test_refer_anchor_weight_reaches_the_loss_config():
    assert run_config(build_parser().parse_args(["--preset", "tiny"])).loss.refer_anchor_weight == 0.0
    chosen = run_config(build_parser().parse_args(["--preset", "tiny", "--refer-anchor-weight", "1.5"]))
    assert chosen.loss.refer_anchor_weight == 1.5


def test_referring_targets_name_the_attributes_the_expression_names():
    """The mask of named attributes holds the target phrase's attributes, and for "same colour (shape) as" also the
    colour (shape) that the anchor gives; generic and visual-prompt samples carry none."""
    columns = list(ATTRIBUTE_VOCABULARIES)
    seen = set()
    for seed in range(6):
        clip = make_clip(seed, "train")
        for prompt in clip.prompts:
            named = sample_from_prompt(clip, prompt, 0, 1, VisualPromptConfig()).targets[0].named_attributes
            if prompt.query is None:
                assert named is None
                continue
            expected = {name for name, _ in prompt.query.target}
            if prompt.query.name in ("reasoning.same_colour", "reasoning.same_shape"):
                expected.add(prompt.query.name.split("_")[-1])
                seen.add(prompt.query.name)
            assert {columns[i] for i in named.nonzero().flatten().tolist()} == expected, prompt.text
    assert seen == {"reasoning.same_colour", "reasoning.same_shape"}


def test_train_keeps_the_checkpoints_asked_for_and_refuses_steps_it_will_not_reach(tmp_path, capsys):
    out = tmp_path / "run"
    small = ["--preset", "tiny", "--image-batch", "1", "--clip-batch", "1", "--clip-frames", "2", "--frame-size", "64",
             "--out", str(out)]
    assert train_main([*small, "--steps", "2", "--keep-steps", "1"]) == 0
    kept = torch.load(out / "step-1" / TRAINING_STATE_FILE, weights_only=True)
    assert kept["step"] == 1 and not (out / "step-2").exists()
    load_checkpoint(out / "step-1")
    with pytest.raises(SystemExit) as stop:
        train_main([*small, "--resume", str(out / "latest"), "--steps", "4", "--keep-steps", "2", "3"])
    assert stop.value.code == 2 and "--keep-steps [2]" in capsys.readouterr().err


def test_a_resumed_train_logs_each_step_once_and_counts_all_its_time(tmp_path):
    """A run stopped after its last checkpoint had logged steps that the resumed run takes again (here step 2 of a run
    resumed from its step-2 checkpoint, and a line cut short): the log keeps the new lines only, and `elapsed_s` goes on
    from the first part."""
    out = tmp_path / "run"
    small = ["--preset", "tiny", "--image-batch", "1", "--clip-batch", "1", "--clip-frames", "2", "--frame-size", "64",
             "--log-every", "1", "--out", str(out)]
    assert train_main([*small, "--steps", "3", "--keep-steps", "2"]) == 0
    first_part_s = json.loads((out / "step-2" / TRAIN_CONFIG_FILE).read_text())["elapsed_s"]
    with open(out / "log.jsonl", "a") as log:
        log.write('{"step": 3, "elapsed')  # a line cut short when the run was killed
    assert train_main([*small, "--resume", str(out / "step-2"), "--steps", "4"]) == 0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2, 3]
    assert rows[2]["elapsed_s"] >= round(first_part_s, 1)
    latest = json.loads((out / "latest" / TRAIN_CONFIG_FILE).read_text())
    assert latest["resumed_at_steps"] == [2] and latest["elapsed_s"] > first_part_s
