"""Tiny blocks of the TAM-NAS space (:mod:`robustnas.search_spaces.tiny`).

Every block maps ``in_channels`` to ``out_channels`` channels, where either may
be an ``nni.choice``: the convolutions and BatchNorms are NNI's parametrised
modules (``MutableConv2d``, ``MutableBatchNorm2d``), so NNI's one-shot
strategies turn them into weight-entangled mixed operations (channels are
prefix slices of the widest kernel) and ``freeze`` gives a plain network.

Shortcuts carry no parameters (docs/fidelity.md, "TinyRobustSpace (TAM-NAS)"):
inside a stage the identity is cut or zero-padded to the block's output width
(PyramidNet's zero-padded shortcut, Han et al., CVPR 2017); at a stride-2 basic
block it is subsampled first (ResNet's option A, He et al., CVPR 2016). Because
widths are known only when a subnet is sampled, the shortcut reads them from the
tensors at run time, which is the same in the supernet and in a frozen subnet.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import torch
import torch.nn.functional as F
from nni.mutable import MutableExpression
from nni.nas.nn.pytorch import MutableBatchNorm2d, MutableConv2d, ParametrizedModule
from nni.nas.oneshot.pytorch.supermodule.operation import MixedConv2d, MixedOperation
from torch import nn

__all__ = [
    "BLOCKS",
    "SKIP",
    "ChannelSkip",
    "MixedChannelSkip",
    "MixedConv2dNoBias",
    "ONESHOT_HOOKS",
    "fit_channels",
    "make_block",
]

Width = Union[int, MutableExpression]

#: Name of the parameter-free identity candidate.
SKIP = "skip"


def fit_channels(x: torch.Tensor, channels: int, stride: int = 1) -> torch.Tensor:
    """``x`` subsampled by ``stride`` and cut or zero-padded to ``channels`` channels."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    have = x.shape[1]
    if have > channels:
        return x[:, :channels]
    if have < channels:
        return F.pad(x, (0, 0, 0, 0, 0, channels - have))
    return x


def _conv_bn(in_ch: Width, out_ch: Width, kernel: int, stride: int = 1, groups: Width = 1) -> list[nn.Module]:
    return [
        MutableConv2d(in_channels=in_ch, out_channels=out_ch, kernel_size=kernel, stride=stride,
                      padding=kernel // 2, groups=groups, bias=False),
        MutableBatchNorm2d(num_features=out_ch),
    ]


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual (Sandler et al., CVPR 2018): 1x1 expand, kxk depthwise, 1x1 linear.

    The expansion conv is left out when ``expansion == 1``, as in MobileNetV2.
    The residual is added at stride 1 (with a channel-fitted identity).
    """

    def __init__(self, in_ch: Width, out_ch: Width, stride: int, expansion: int, kernel: int) -> None:
        super().__init__()
        hidden = in_ch * expansion if expansion != 1 else in_ch
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += _conv_bn(in_ch, hidden, 1) + [nn.ReLU6(inplace=True)]
        layers += _conv_bn(hidden, hidden, kernel, stride, groups=hidden) + [nn.ReLU6(inplace=True)]
        layers += _conv_bn(hidden, out_ch, 1)
        self.body = nn.Sequential(*layers)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.stride == 1:
            out = out + fit_channels(x, out.shape[1])
        return out


class SeparableConv(nn.Module):
    """MobileNetV1 depthwise-separable conv (Howard et al., 2017): dw kxk-BN-ReLU, 1x1-BN-ReLU; no residual."""

    def __init__(self, in_ch: Width, out_ch: Width, stride: int, kernel: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(in_ch, in_ch, kernel, stride, groups=in_ch), nn.ReLU(inplace=True),
            *_conv_bn(in_ch, out_ch, 1), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class BasicBlock(nn.Module):
    """ResNet basic block (He et al., CVPR 2016): two 3x3 convs, parameter-free (option A) shortcut."""

    def __init__(self, in_ch: Width, out_ch: Width, stride: int, kernel: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(in_ch, out_ch, kernel, stride), nn.ReLU(inplace=True),
            *_conv_bn(out_ch, out_ch, kernel),
        )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return F.relu(out + fit_channels(x, out.shape[1], self.stride))


class _ChannelSkipBase(nn.Module):
    """Identity whose output is cut or zero-padded to ``out_channels`` (no parameters)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fit_channels(x, self.out_channels)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}"


class ChannelSkip(ParametrizedModule, _ChannelSkipBase, wraps=_ChannelSkipBase):
    """The ``skip`` candidate: identity fitted to the layer's (possibly searched) width."""


class MixedChannelSkip(MixedOperation, _ChannelSkipBase):
    """One-shot version of :class:`ChannelSkip` for NNI's path-sampling strategies.

    Registered through ``TinyRobustSpace.extra_oneshot_hooks``; it reads the
    sampled width like NNI's ``MixedConv2d`` does. Differentiable strategies
    (DARTS) would need a weighted mixture of widths, which an identity cannot
    give, so they are refused with a clear error.
    """

    bound_type = ChannelSkip
    argument_list = ["out_channels"]

    def super_init_argument(self, name: str, value_choice: MutableExpression) -> Any:
        return max(value_choice.grid())  # the widest width: every value the choice can take

    def freeze_weight(self, **kwargs: Any) -> dict[str, Any]:
        return {}

    def forward_with_args(self, out_channels: Any, inputs: torch.Tensor) -> torch.Tensor:
        if not isinstance(out_channels, int):
            raise TypeError(
                "ChannelSkip supports single-path (sampling) one-shot strategies only, such as RandomOneShot "
                f"or TAMNAS; got a mixture of widths {out_channels!r}"
            )
        return fit_channels(inputs, out_channels)


class MixedConv2dNoBias(MixedConv2d):
    """NNI's ``MixedConv2d`` whose ``freeze`` also works for bias-free convolutions.

    NNI 3.0 hands ``{"bias": None}`` to ``load_state_dict`` of the frozen conv,
    which PyTorch rejects as an unexpected key; the key is dropped here.
    """

    def freeze_weight(self, **kwargs: Any) -> dict[str, Any]:
        weights = super().freeze_weight(**kwargs)
        if weights.get("bias") is None:
            weights.pop("bias", None)
        return weights


#: Mutation hooks the space hands to NNI one-shot strategies (before NNI's own).
ONESHOT_HOOKS = [MixedChannelSkip.mutate, MixedConv2dNoBias.mutate]


def _inverted(expansion: int, kernel: int) -> Callable[[Width, Width, int], nn.Module]:
    return lambda i, o, s: InvertedResidual(i, o, s, expansion, kernel)


#: Candidate blocks, name -> factory ``(in_channels, out_channels, stride) -> module``.
BLOCKS: dict[str, Callable[[Width, Width, int], nn.Module]] = {
    **{f"mb_e{e}_k{k}": _inverted(e, k) for e in (1, 3, 6) for k in (3, 5)},
    "sep_k3": lambda i, o, s: SeparableConv(i, o, s, 3),
    "sep_k5": lambda i, o, s: SeparableConv(i, o, s, 5),
    "basic_k3": lambda i, o, s: BasicBlock(i, o, s, 3),
    SKIP: lambda i, o, s: ChannelSkip(o),
}


def make_block(name: str, in_ch: Width, out_ch: Width, stride: int) -> nn.Module:
    """One candidate block by name (see :data:`BLOCKS`)."""
    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r}; valid blocks: {sorted(BLOCKS)}")
    if name == SKIP and stride != 1:
        raise ValueError("the skip block keeps the resolution and cannot have stride 2")
    return BLOCKS[name](in_ch, out_ch, stride)
