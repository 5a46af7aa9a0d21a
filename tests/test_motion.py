"""The motion term (models/motion.py, PredictorConfig.motion_head): descriptors by hand on hand-drawn masks, linking
masks into tracks over frames, the term the refer logit adds, its CE, the ground truth the world gives it, the state
that carries the tracks, and `train --init --train-only`, which adds the head to a trained model without touching the
rest. Unit tests: hand-built masks and a tiny random model, no Kafka or Ray."""

from __future__ import annotations

import math

import pytest
import torch

from models import motion
from models.build import build_hyperseg
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import MotionConfig, PredictorConfig
from models.losses import NOT_REFERRED, REFERRED, FrameTarget, HyperSegLoss
from models.postprocess import referring
from models.predictor import LayerPrediction, PredictorOutput
from models.presets import preset_config
from models.prompts import TaskPrompt
from models.temporal import StreamState
from models.video_predictor import HyperSegVideoPredictor
from operators.synthetic import make_clip
from operators.training_samples import object_motion
from pipeline.evaluate import main as evaluate_command
from pipeline.train import build_parser, initial_model, run_config
from pipeline.train import main as train_command

SIZE = (64, 64)  # frame (H, W); masks below are drawn at this size, so one pixel is 1/64 of the shorter side
UNIT = 1 / 64  # speed_unit of one pixel per frame


def square(x0: int, y0: int, side: int = 8) -> torch.Tensor:
    mask = torch.zeros(*SIZE, dtype=torch.bool)
    mask[y0:y0 + side, x0:x0 + side] = True
    return mask


def test_centroids_in_units_of_the_shorter_side():
    """An 8 x 8 square at x 10..17, y 20..27 of a 64 x 128 (H x W) frame has its centre at (14, 24) px, i.e.
    (14/64, 24/64); an empty mask has none."""
    mask = torch.zeros(2, 64, 128, dtype=torch.bool)
    mask[0, 20:28, 10:18] = True
    got = motion.centroids(mask, (64, 128))
    assert got[0].tolist() == pytest.approx([14 / 64, 24 / 64])
    assert got[1].isnan().all()


def test_descriptor_by_hand():
    """An object seen on frames 2, 3 and 5: 3 px right by frame 3, then 4 px down by frame 5 (2 px per frame). In
    pixels per frame: mean velocity (3, 4) / 3 frames, mean speed (3 + 4) / 3, last speed 2; its nearest edge (the
    bottom, 10 px away) and the last velocity towards it; a late start."""
    start = torch.tensor([10.0, 50.0]) / 64
    row = motion.start(2, start)
    row = motion.advance(row, 3, start + torch.tensor([3.0, 0.0]) / 64)
    row = motion.advance(row, 5, start + torch.tensor([3.0, 4.0]) / 64)
    got = motion.describe(row[None], SIZE, UNIT)[0]
    centre_px = torch.tensor([13.0, 54.0])  # nearest edge: the bottom, 10 px away
    assert got.tolist() == pytest.approx([
        3 / 3, 4 / 3,  # mean velocity x, y, px per frame
        (3 + 4) / 3,  # path 3 + 4 px over 3 frames
        2.0,  # last step: 4 px over 2 frames
        1 - 2 * float(64 - centre_px[1]) / 64,  # 10 px from the bottom edge of a 64 px frame
        2.0,  # last step's velocity straight towards that edge
        1.0,  # first seen after frame 0
    ], abs=1e-5)
    fresh = motion.describe(motion.start(0, torch.tensor([0.5, 0.5]))[None], SIZE, UNIT)[0]
    assert fresh.tolist() == pytest.approx([0, 0, 0, 0, 0, 0, 0], abs=1e-6)  # one sighting, at the centre, frame 0


def test_follow_links_masks_over_frames():
    """Frame 0: a square and a second square; frame 1: the first moved 2 px right (still overlapping), the second
    gone, a third one new, and a query with an empty mask. The moved square's query continues its track (velocity 2
    px per frame), the new one starts its own (no velocity, a late start), the empty one gets zeros, and the gone
    object's track ends."""
    cfg = MotionConfig(grid=64, link_iou=0.3, speed_unit=UNIT)
    tracks = motion.MotionTracks.empty(cfg.grid)
    first = torch.stack([square(10, 10), square(40, 40)])
    described, tracks = motion.follow(tracks, first, torch.tensor([0.9, 0.8]), 0, SIZE, cfg)
    assert len(tracks.rows) == 2 and described[:, :4].abs().max() == 0
    second = torch.stack([square(40, 10), square(12, 10), torch.zeros(*SIZE, dtype=torch.bool), square(13, 10)])
    described, tracks = motion.follow(tracks, second, torch.tensor([0.9, 0.9, 0.9, 0.5]), 1, SIZE, cfg)
    assert described[1, 0].item() == pytest.approx(2.0) and described[1, 3].item() == pytest.approx(2.0)
    assert described[3, 0].item() == pytest.approx(3.0)  # a duplicate of the same object: it continues it too
    assert described[0, :4].abs().max() == 0 and described[0, 6] == 1.0  # new object: no velocity, late
    assert described[2].abs().max() == 0
    assert len(tracks.rows) == 2  # the moved square (its best-quality query, 2 px) and the new one; the gone one ended
    kept = tracks.rows[tracks.rows[:, motion.FIRST_FRAME] == 0]
    assert kept[0, motion.LAST_X].item() == pytest.approx(16 / 64)


def test_motion_term_reorders_without_raising():
    wanted = torch.tensor([1.0, 0.0])
    descriptors = torch.tensor([[2.0, 5.0], [-1.0, 0.0], [0.5, 9.0]])
    assert motion.motion_term(wanted, descriptors, 1.5).tolist() == pytest.approx([0.0, -4.5, -2.25])


def test_motion_loss_by_hand():
    """Two objects with descriptors d0, d1 and E_P's weights w: CE = -log softmax(d . w)[referent]; not counted for
    a frame with a single object or for other tasks, and an error without the head."""
    cfg = preset_config("tiny")
    cfg.loss.motion_weight = 1.0
    loss = HyperSegLoss(cfg.loss, cfg.predictor)
    wanted = torch.zeros(2, 1, motion.MOTION_FEATURES)
    wanted[0, 0, 0] = 2.0
    output = PredictorOutput(layers=[], instance=torch.zeros(2, 1, 1), boxes=torch.zeros(2, 1, 4),
                             wanted_motion=wanted)
    descriptors = torch.zeros(2, motion.MOTION_FEATURES)
    descriptors[:, 0] = torch.tensor([1.0, -0.5])
    target = FrameTarget(masks=torch.zeros(2, 4, 4, dtype=torch.bool), prompt_index=torch.tensor([NOT_REFERRED,
                         REFERRED]), motion=descriptors)
    alone = FrameTarget(masks=torch.zeros(1, 4, 4, dtype=torch.bool), prompt_index=torch.tensor([REFERRED]),
                        motion=descriptors[:1])
    got = loss._motion_loss(output, [target, alone], ["referring", "referring"])
    assert got.item() == pytest.approx(-torch.tensor([2.0, -1.0]).log_softmax(0)[1].item())
    assert loss._motion_loss(output, [target, target], ["generic", "visual"]) is None
    with pytest.raises(ValueError, match="motion head"):
        loss._motion_loss(PredictorOutput(layers=[], instance=wanted, boxes=wanted), [target], ["referring"])


def test_world_ground_truth_follows_each_object_from_the_first_frame():
    """object_motion on a training clip equals following the object's own masks with models/motion.py; a linear
    mover's mean velocity points the way its centre went."""
    clip = make_clip(3, "train")
    t = clip.frames.shape[0] - 1
    objects = [i for i in range(len(clip.objects)) if clip.visible_px[:, i].all()]
    got = object_motion(clip, objects, t, 0.045)
    size = clip.frames.shape[1:3]
    for k, i in enumerate(objects):
        centres = motion.centroids(torch.from_numpy(clip.masks[:, i]), size)
        row = motion.start(0, centres[0])
        for frame in range(1, t + 1):
            row = motion.advance(row, frame, centres[frame])
        assert got[k].tolist() == pytest.approx(motion.describe(row[None], size, 0.045)[0].tolist(), abs=1e-6)
        went = clip.centres[t, i] - clip.centres[0, i]
        if abs(went[0]) > 20:
            assert math.copysign(1, got[k, 0].item()) == math.copysign(1, float(went[0]))


def test_state_carries_the_tracks_through_bytes():
    tracks = motion.MotionTracks(torch.arange(18.0).view(2, 9), torch.ones(2, 4, 4, dtype=torch.bool))
    again = StreamState.from_bytes(StreamState(prompt_key="k", motion=tracks).to_bytes())
    assert torch.equal(again.motion.rows, tracks.rows) and torch.equal(again.motion.masks, tracks.masks)
    assert StreamState.from_bytes(StreamState(prompt_key="k").to_bytes()).motion is None


def test_referring_pick_adds_the_motion_term():
    """Two queries with whole-quality masks; the refer logit prefers the first (1 against 0), and a motion term of
    -3 for it puts the second first, at sigmoid(0 + 0)."""
    left, right = torch.zeros(8, 8), torch.zeros(8, 8)
    left[:, :4], right[:, 4:] = 1.0, 1.0
    masks = torch.stack([left, right])[None] * 40 - 20  # logits: sure inside, sure outside
    pred = LayerPrediction(masks=masks, refer=torch.tensor([[[1.0], [0.0]]]), classes=torch.zeros(1, 2, 1),
                           regions=torch.zeros(1, 2, 1))
    cfg = PredictorConfig()
    assert referring(pred, 0, cfg, (8, 8), "referring").query_indices.tolist() == [0]
    moved = referring(pred, 0, cfg, (8, 8), "referring", motion=torch.tensor([-3.0, 0.0]))
    assert moved.query_indices.tolist() == [1] and moved.scores[0].item() == pytest.approx(0.5, abs=1e-3)


def test_referring_streams_follow_their_candidates():
    """A tiny model with the motion head: a referring stream's state holds the followed objects after each frame
    (they come back on the frame's result); a visual-prompt stream has none."""
    cfg = run_config(build_parser().parse_args(["--preset", "tiny", "--motion-weight", "1"]))
    assert cfg.predictor.motion_head and cfg.loss.motion_weight == 1.0
    torch.manual_seed(0)
    predictor = HyperSegVideoPredictor(build_hyperseg(cfg))
    prompt = TaskPrompt("referring", text="the square moving up")
    frames = torch.randint(0, 255, (3, 64, 64, 3), dtype=torch.uint8)
    state = None
    for frame in frames:
        result, state = predictor.step(frame, prompt, state)
        assert result.motion_tracks is state.motion and len(state.motion.rows) > 0
    region = torch.zeros(64, 64, dtype=torch.bool)
    region[8:24, 8:24] = True
    result, state = predictor.step(frames[0], TaskPrompt("visual", regions=(region,)))
    assert result.motion_tracks is None and state.motion is None


def test_init_trains_only_the_new_head(tmp_path):
    """`train --init CKPT --motion-weight 1 --train-only predictor.motion_head`: the checkpoint's weights, the new
    head the only trainable part; a frozen part missing from the checkpoint is an error."""
    torch.manual_seed(0)
    base = build_hyperseg(preset_config("tiny"))
    save_checkpoint(base, tmp_path / "base")
    args = build_parser().parse_args(["--init", str(tmp_path / "base"), "--motion-weight", "1", "--train-only",
                                      "predictor.motion_head"])
    model = initial_model(args, "cpu")
    assert model.cfg.predictor.motion_head and model.cfg.trained_only == ("predictor.motion_head",)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable == {"predictor.motion_head.weight", "predictor.motion_head.bias"}
    for name, value in base.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    whole = build_parser().parse_args(["--init", str(tmp_path / "base"), "--motion-weight", "1"])
    assert initial_model(whole, "cpu").trainable_parameters() > model.trainable_parameters()
    frozen = build_parser().parse_args(["--init", str(tmp_path / "base"), "--motion-weight", "1", "--train-only",
                                        "predictor.refer_head"])
    with pytest.raises(ValueError, match="motion_head"):
        initial_model(frozen, "cpu")
    saved = save_checkpoint(model, tmp_path / "with-head")
    assert load_checkpoint(saved)[0].cfg.predictor.motion_head


def test_train_refuses_init_together_with_resume(tmp_path, capsys):
    """Each names a checkpoint to start from; taking one silently would train something the command did not say."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_command(["--init", str(tmp_path / "a"), "--resume", str(tmp_path / "b"), "--out", str(out)])
    assert exit_info.value.code == 2
    assert "give one" in capsys.readouterr().err and not out.exists()


def test_eval_refuses_a_motion_weight_for_a_model_without_the_head(tmp_path, capsys):
    save_checkpoint(build_hyperseg(preset_config("tiny")), tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        evaluate_command(["--checkpoint", str(tmp_path), "--motion-match-weight", "2", "--clips", "1"])
    assert exit_info.value.code == 2
    assert "has no motion head" in capsys.readouterr().err
