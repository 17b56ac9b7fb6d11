"""Interval bound propagation (IBP) through any forward built from standard torch ops.

An :class:`IntervalTensor` carries a box ``[center - radius, center + radius]``
through a model's ordinary ``forward``: it is a ``torch.Tensor`` subclass whose
``__torch_function__`` replaces each supported op with its interval
counterpart (Gowal et al., "On the Effectiveness of Interval Bound Propagation
for Training Verifiably Robust Models", 2018). Because the model code itself is
run unchanged, the bounds go through NNI's differentiable supernets (mixed ops
that weight a stack of candidate outputs by softmaxed architecture parameters)
as well as through frozen models, and they stay differentiable with respect to
every plain tensor used in the forward (weights and architecture parameters).
DSRNA (Hosseini, Yang, Xie, CVPR 2021) uses them as its certified-bound
robustness metric; the paper uses tighter linear bounds, which
``margin_lower_bound(..., method="crown")`` gives (:mod:`._crown`; docs/evaluator.md,
"Certified bounds").

Supported ops: linear / conv (signed weights: ``center * W``, ``radius * |W|``),
batch norm (eval mode: exact affine map; train mode: statistics of the
center, an approximation, see docs/fidelity.md), monotone activations and
max pooling (applied to both ends), average pooling and sums/means, add / sub /
neg, products and quotients with plain tensors or scalars of any sign,
interval-interval products, shape and indexing ops, concatenation, padding and
dropout. Anything else raises :class:`UnsupportedOpError` (a ``NotImplementedError``)
whose ``op`` attribute names the op.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from robustnas.plugins.errors import ConfigError

from ._utils import logits_of, model_device, preserved_mode

_logger = logging.getLogger(__name__)

__all__ = [
    "IntervalTensor",
    "UnsupportedOpError",
    "NORMS",
    "input_box",
    "BOUND_METHODS",
    "interval_bounds",
    "linear_bounds",
    "margin_lower_bound",
    "certified_accuracy",
]

NORMS = ("linf", "l2")
#: Bound methods: interval bound propagation, or linear (CROWN-style) bounds (:mod:`._crown`).
BOUND_METHODS = ("interval", "crown")



class UnsupportedOpError(NotImplementedError):
    """An operation the bounds cannot propagate; ``op`` names it (e.g. ``"round"``)."""

    def __init__(self, message: str, op: str) -> None:
        super().__init__(message)
        self.op = op


_Handler = Callable[[Callable[..., Any], tuple, dict], Any]
_HANDLERS: dict[str, _Handler] = {}


def _registrar(handlers: dict[str, Any]) -> Callable[..., Callable[[Any], Any]]:
    """``register(*op_names)``: a decorator that files a handler under each op name in ``handlers``."""

    def register(*names: str) -> Callable[[Any], Any]:
        def deco(fn: Any) -> Any:
            for name in names:
                handlers[name] = fn
            return fn

        return deco

    return register


_register = _registrar(_HANDLERS)


class _BoundTensor(torch.Tensor):
    """What :class:`IntervalTensor` and the linear bounds' ``LinearBoundTensor`` share: a box
    ``[center - radius, center + radius]`` (``lower``, ``upper``) on a wrapper that holds no
    storage, and the error when an op reaches torch's low-level dispatch without a handler."""

    center: torch.Tensor
    radius: torch.Tensor
    #: The propagation that errors name (``"interval"``, ``"linear"``).
    propagation: ClassVar[str] = ""

    @classmethod
    def _wrapper(cls, center: torch.Tensor) -> Any:
        """An empty wrapper of ``center``'s shape, dtype and device (the caller sets the fields)."""
        return torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls, center.shape, dtype=center.dtype, device=center.device, requires_grad=False
        )

    @property
    def lower(self) -> torch.Tensor:
        return self.center - self.radius

    @property
    def upper(self) -> torch.Tensor:
        return self.center + self.radius

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001
        raise UnsupportedOpError(
            f"{cls.propagation} bound propagation reached the low-level op {func} without a handler; "
            "the model uses an operation the bounds do not support", op=str(func)
        )


def _passes_through(func: Any, name: str) -> bool:
    """Whether an op reads only metadata (sizes, dtype, a ``*_like`` factory): it runs on the centers."""
    return name in _PASSTHROUGH or (name == "__get__" and _property_name(func) not in _STRUCTURAL_PROPERTIES)


class IntervalTensor(_BoundTensor):
    """A box ``[center - radius, center + radius]`` that flows through torch ops.

    ``center`` and ``radius`` are plain tensors (``radius >= 0``) carrying the
    autograd history; the wrapper itself holds no storage. ``lower`` and
    ``upper`` give the box ends.
    """

    propagation = "interval"

    @staticmethod
    def __new__(cls, center: torch.Tensor, radius: torch.Tensor) -> "IntervalTensor":
        if center.shape != radius.shape:
            raise ValueError(f"center shape {tuple(center.shape)} != radius shape {tuple(radius.shape)}")
        out = cls._wrapper(center)
        out.center = center
        out.radius = radius
        return out

    @classmethod
    def from_bounds(cls, lower: torch.Tensor, upper: torch.Tensor) -> "IntervalTensor":
        """Build from lower and upper ends (``lower <= upper`` elementwise)."""
        return cls((upper + lower) / 2, (upper - lower) / 2)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"IntervalTensor(shape={tuple(self.center.shape)}, max_radius={float(self.radius.max()):.4g})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        name = _op_name(func)
        if _passes_through(func, name):
            return func(*_map(args, _center), **_map(kwargs, _center))
        handler = _HANDLERS.get(name)
        if handler is None:
            raise UnsupportedOpError(
                f"interval bound propagation does not support the op '{name}' ({func}); "
                f"supported ops: {sorted(_HANDLERS)}", op=name
            )
        return handler(func, args, kwargs)


def _op_name(func: Any) -> str:
    return getattr(func, "__name__", None) or str(func)


def _property_name(func: Any) -> str:
    owner = getattr(func, "__self__", None)
    return getattr(owner, "__name__", "")


def _map(obj: Any, fn: Callable[[Any], Any], kind: type[_BoundTensor] = IntervalTensor) -> Any:
    """Apply ``fn`` to every bound tensor of ``kind`` inside nested lists/tuples/dicts."""
    if isinstance(obj, kind):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(o, fn, kind) for o in obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn, kind) for k, v in obj.items()}
    return obj


def _center(t: _BoundTensor) -> torch.Tensor:
    return t.center


def _radius(t: IntervalTensor) -> torch.Tensor:
    return t.radius


def _wrap(center: Any, radius: Any) -> Any:
    if isinstance(center, torch.Tensor):
        return IntervalTensor(center, radius)
    if isinstance(center, (list, tuple)):
        return type(center)(_wrap(c, r) for c, r in zip(center, radius))
    return center


def _inplace(target: Any, result: IntervalTensor) -> IntervalTensor:
    """Emulate an in-place op: the IntervalTensor object takes the new box."""
    if not isinstance(target, IntervalTensor):
        raise UnsupportedOpError("in-place interval op on a plain tensor", op="in-place op on a plain tensor")
    target.center = result.center
    target.radius = result.radius
    return target


def _as_interval(x: Any) -> IntervalTensor:
    if isinstance(x, IntervalTensor):
        return x
    t = torch.as_tensor(x)
    return IntervalTensor(t, torch.zeros_like(t))


# --- metadata and shape ops ---------------------------------------------------------

_PASSTHROUGH = {
    "size", "dim", "numel", "__len__", "nelement", "ndimension", "is_floating_point", "is_complex",
    "get_device", "is_contiguous", "element_size", "stride", "storage_offset", "__format__",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "__hash__", "data_ptr",
}
_STRUCTURAL_PROPERTIES = {"T", "mT", "H", "mH"}


@_register(
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "squeeze", "unsqueeze",
    "contiguous", "clone", "expand", "expand_as", "repeat", "__getitem__", "narrow", "select",
    "chunk", "split", "unbind", "view_as", "reshape_as", "flip", "roll", "movedim", "swapaxes",
    "to", "float", "double", "half", "bfloat16", "cpu", "cuda", "type_as", "detach", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "repeat_interleave", "tile",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "__get__",
)
def _structural(func, args, kwargs):
    """Ops that only move or copy entries: apply to center and radius alike."""
    c = func(*_map(args, _center), **_map(kwargs, _center))
    r = func(*_map(args, _radius_or_center_for_shape(args)), **_map(kwargs, _center))
    return _wrap(c, r)


def _radius_or_center_for_shape(args: tuple) -> Callable[[IntervalTensor], torch.Tensor]:
    first = args[0] if args else None

    def pick(t: IntervalTensor) -> torch.Tensor:
        # only the operand itself moves its radius; other IntervalTensors (view_as, type_as) give shapes
        return t.radius if t is first else t.center

    return pick


@_register("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack")
def _concat(func, args, kwargs):
    tensors = args[0]
    ints = [_as_interval(t) for t in tensors]
    c = func([t.center for t in ints], *args[1:], **kwargs)
    r = func([t.radius for t in ints], *args[1:], **kwargs)
    return IntervalTensor(c, r)


def _pad_args(args: tuple, kwargs: dict) -> tuple[Any, str, Any]:
    """``(pad, mode, value)`` of an ``F.pad`` call."""
    pad = args[1] if len(args) > 1 else kwargs["pad"]
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    value = args[3] if len(args) > 3 else kwargs.get("value", None)
    return pad, mode, value


@_register("pad")
def _pad(func, args, kwargs):
    x = args[0]
    pad, mode, value = _pad_args(args, kwargs)
    if mode == "constant":
        c = F.pad(x.center, pad, mode="constant", value=0.0 if value is None else value)
        r = F.pad(x.radius, pad, mode="constant", value=0.0)
    else:
        c = F.pad(x.center, pad, mode=mode)
        r = F.pad(x.radius, pad, mode=mode)
    return IntervalTensor(c, r)


# --- linear ops ---------------------------------------------------------------------

@_register(
    "sum", "mean", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "trace", "cumsum",
)
def _nonnegative_linear(func, args, kwargs):
    """Linear maps with non-negative coefficients: the radius maps through unchanged."""
    c = func(*_map(args, _center), **kwargs)
    r = func(*_map(args, _radius), **kwargs)
    return IntervalTensor(c, r)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _plain(x: Any, what: str) -> Any:
    if isinstance(x, IntervalTensor):
        raise UnsupportedOpError(f"interval bound propagation does not support an interval {what}",
                                 op=f"interval {what}")
    return x


def _weight_and_bias(args: tuple, kwargs: dict) -> tuple[torch.Tensor, Any]:
    """The (plain) weight and bias of an ``F.linear`` / ``F.conv*`` call."""
    return _plain(_arg(args, kwargs, 1, "weight"), "weight"), _plain(_arg(args, kwargs, 2, "bias"), "bias")


def _conv_rest(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The arguments of a convolution after input, weight and bias (stride, padding, ...)."""
    return args[3:], {k: v for k, v in kwargs.items() if k not in ("input", "weight", "bias")}


@_register("linear")
def _linear(func, args, kwargs):
    x = args[0]
    weight, bias = _weight_and_bias(args, kwargs)
    return IntervalTensor(F.linear(x.center, weight, bias), F.linear(x.radius, weight.abs()))


@_register("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv(func, args, kwargs):
    x = args[0]
    weight, bias = _weight_and_bias(args, kwargs)
    rest_args, rest_kwargs = _conv_rest(args, kwargs)
    c = func(x.center, weight, bias, *rest_args, **rest_kwargs)
    r = func(x.radius, weight.abs(), None, *rest_args, **rest_kwargs)
    return IntervalTensor(c, r)


@_register("matmul", "mm", "bmm", "__matmul__", "__rmatmul__")
def _matmul(func, args, kwargs):
    a, b = args[0], args[1]
    if func.__name__ == "__rmatmul__":
        a, b = b, a
    if isinstance(a, IntervalTensor) and isinstance(b, IntervalTensor):
        raise UnsupportedOpError("interval bound propagation does not support interval @ interval",
                                 op="interval @ interval")
    if isinstance(a, IntervalTensor):
        return IntervalTensor(torch.matmul(a.center, b), torch.matmul(a.radius, b.abs()))
    return IntervalTensor(torch.matmul(a, b.center), torch.matmul(a.abs(), b.radius))


def _batch_norm_affine(center: torch.Tensor, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` of ``F.batch_norm``, shaped to broadcast against ``center``.

    Eval mode (running statistics): the exact affine map. Training mode: the batch statistics
    of ``center`` (an approximation, docs/fidelity.md).
    """
    running_mean = _arg(args, kwargs, 1, "running_mean")
    running_var = _arg(args, kwargs, 2, "running_var")
    weight = _arg(args, kwargs, 3, "weight")
    bias = _arg(args, kwargs, 4, "bias")
    training = _arg(args, kwargs, 5, "training", False)
    eps = _arg(args, kwargs, 7, "eps", 1e-5)
    dims = [0] + list(range(2, center.dim()))
    if training or running_mean is None:
        # approximate: the batch statistics of the box centers (docs/fidelity.md)
        mean = center.mean(dim=dims)
        var = center.var(dim=dims, unbiased=False)
    else:
        mean, var = running_mean, running_var
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    shape = [1, -1] + [1] * (center.dim() - 2)
    return scale.view(shape), shift.view(shape)


@_register("batch_norm")
def _batch_norm(func, args, kwargs):
    x = args[0]
    scale, shift = _batch_norm_affine(x.center, args, kwargs)
    return IntervalTensor(x.center * scale + shift, x.radius * scale.abs())


# --- arithmetic -----------------------------------------------------------------------

def _add_like(a: Any, b: Any, sign: float) -> IntervalTensor:
    """``a + sign * b`` where at least one operand is an IntervalTensor."""
    if not isinstance(a, IntervalTensor):
        c = a + sign * b.center
        return IntervalTensor(c, torch.broadcast_to(abs(sign) * b.radius, c.shape))
    if not isinstance(b, IntervalTensor):
        c = a.center + sign * b
        return IntervalTensor(c, torch.broadcast_to(a.radius, c.shape))
    return IntervalTensor(a.center + sign * b.center, a.radius + abs(sign) * b.radius)


@_register("add", "__add__", "__radd__", "add_", "__iadd__")
def _add(func, args, kwargs):
    alpha = kwargs.get("alpha", 1)
    out = _add_like(args[0], args[1], alpha)
    if func.__name__ in ("add_", "__iadd__"):
        return _inplace(args[0], out)
    return out


@_register("sub", "subtract", "__sub__", "sub_", "__isub__", "__rsub__", "rsub")
def _sub(func, args, kwargs):
    alpha = kwargs.get("alpha", 1)
    if func.__name__ in ("__rsub__", "rsub"):
        return _add_like(args[1], args[0], -alpha)
    out = _add_like(args[0], args[1], -alpha)
    if func.__name__ in ("sub_", "__isub__"):
        return _inplace(args[0], out)
    return out


@_register("neg", "__neg__", "negative")
def _neg(func, args, kwargs):
    return IntervalTensor(-args[0].center, args[0].radius)


@_register("__pos__", "positive")
def _pos(func, args, kwargs):
    return args[0]


def _interval_mul(a: IntervalTensor, b: IntervalTensor) -> IntervalTensor:
    corners = torch.stack([a.lower * b.lower, a.lower * b.upper, a.upper * b.lower, a.upper * b.upper])
    return IntervalTensor.from_bounds(corners.min(0).values, corners.max(0).values)


@_register("mul", "multiply", "__mul__", "__rmul__", "mul_", "__imul__")
def _mul(func, args, kwargs):
    a, b = args[0], args[1]
    if not isinstance(a, IntervalTensor):
        a, b = b, a
    if isinstance(b, IntervalTensor):
        out = _interval_mul(a, b)
    else:
        b_abs = b.abs() if isinstance(b, torch.Tensor) else abs(b)
        out = IntervalTensor(a.center * b, a.radius * b_abs)
    if func.__name__ in ("mul_", "__imul__"):
        return _inplace(args[0], out)
    return out


@_register("div", "divide", "true_divide", "__truediv__", "div_", "__itruediv__")
def _div(func, args, kwargs):
    a, b = args[0], args[1]
    if not isinstance(a, IntervalTensor) or isinstance(b, IntervalTensor):
        raise UnsupportedOpError("interval bound propagation supports division only by plain tensors or scalars",
                                 op="division by an interval")
    if kwargs.get("rounding_mode") is not None:
        raise UnsupportedOpError("interval bound propagation does not support rounded division",
                                 op="rounded division")
    b_abs = b.abs() if isinstance(b, torch.Tensor) else abs(b)
    out = IntervalTensor(a.center / b, a.radius / b_abs)
    if func.__name__ in ("div_", "__itruediv__"):
        return _inplace(a, out)
    return out


# --- monotone non-decreasing maps -----------------------------------------------------

_MONOTONE = (
    "relu", "relu6", "hardtanh", "sigmoid", "tanh", "elu", "selu", "celu", "softplus", "clamp", "clip",
    "clamp_min", "clamp_max", "exp", "hardsigmoid", "logsigmoid", "tanhshrink", "softsign",
    "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "_max_pool1d", "_max_pool2d", "_max_pool3d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "_adaptive_max_pool2d",
)
_INPLACE_MONOTONE = ("relu_", "relu6_", "hardtanh_", "sigmoid_", "tanh_", "elu_", "selu_", "celu_",
                     "clamp_", "clip_", "clamp_min_", "clamp_max_", "exp_", "leaky_relu_")


@_register(*_MONOTONE, "leaky_relu", *_INPLACE_MONOTONE)
def _monotone(func, args, kwargs):
    """Non-decreasing elementwise maps and max pooling: map both ends."""
    name = func.__name__
    x = args[0]
    if "leaky_relu" in name:
        slope = _arg(args, kwargs, 1, "negative_slope", 0.01)
        if slope < 0:
            raise UnsupportedOpError(f"leaky_relu with negative slope {slope} is not monotone", op="leaky_relu")
    rest = tuple(_plain(a, "argument") for a in args[1:])
    kw = {k: v for k, v in kwargs.items() if k != "inplace"}
    if kw.get("return_indices") or (name.endswith("with_indices")):
        raise UnsupportedOpError(f"interval bound propagation does not support '{name}' with indices",
                                 op=f"{name} with indices")
    base = _OUT_OF_PLACE.get(name)
    if base is not None:
        out = _monotone_apply(base, x, rest, kw)
        return _inplace(x, out)
    if "inplace" in kwargs and kwargs["inplace"]:
        out = _monotone_apply(func, x, rest, kw)
        return _inplace(x, out)
    return _monotone_apply(func, x, rest, kw)


def _monotone_apply(fn: Callable[..., Any], x: IntervalTensor, rest: tuple, kw: dict) -> IntervalTensor:
    lo = fn(x.lower, *rest, **kw)
    hi = fn(x.upper, *rest, **kw)
    return IntervalTensor.from_bounds(lo, hi)


_OUT_OF_PLACE: dict[str, Callable[..., Any]] = {
    "relu_": torch.relu, "relu6_": F.relu6, "hardtanh_": F.hardtanh, "sigmoid_": torch.sigmoid,
    "tanh_": torch.tanh, "elu_": F.elu, "selu_": torch.selu, "celu_": torch.celu, "clamp_": torch.clamp,
    "clip_": torch.clamp, "clamp_min_": torch.clamp_min, "clamp_max_": torch.clamp_max, "exp_": torch.exp,
    "leaky_relu_": F.leaky_relu,
}


_DROPOUTS = ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")


def _dropout_mask(func: Any, args: tuple, kwargs: dict, propagation: str) -> torch.Tensor | None:
    """The mask a dropout op samples for ``args[0]``, or None where it is the identity (eval mode,
    ``p == 0``). One sampled (non-negative) mask serves the whole bound (box and linear functions):
    sound for that sampled network. Alpha dropout (not a mask) is refused in training mode."""
    p = _arg(args, kwargs, 1, "p", 0.5)
    training = _arg(args, kwargs, 2, "training", True)
    if not training or p == 0:
        return None
    name = _op_name(func)
    if "alpha" in name:
        raise UnsupportedOpError(f"{propagation} bound propagation does not support '{name}' in training mode", op=name)
    return func(torch.ones_like(args[0].center), p, True)


@_register(*_DROPOUTS)
def _dropout(func, args, kwargs):
    x = args[0]
    mask = _dropout_mask(func, args, kwargs, "interval")
    return x if mask is None else IntervalTensor(x.center * mask, x.radius * mask)


# --- public API -----------------------------------------------------------------------

def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid norms: {', '.join(NORMS)}")


def input_box(x: torch.Tensor, eps: float, norm: str = "linf") -> IntervalTensor:
    """The box of all inputs within ``eps`` of ``x``, clamped to the image range [0, 1].

    For ``norm="l2"`` the L-inf box of the same radius is used: it contains the
    L2 ball, so the bounds stay sound but are looser (docs/fidelity.md).
    """
    _check_norm(norm)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    lower = (x - eps).clamp(0.0, 1.0)
    upper = (x + eps).clamp(0.0, 1.0)
    return IntervalTensor.from_bounds(lower, upper)


class _LinearRecord:
    """One ``F.linear`` on an IntervalTensor: its input box, weights and output, as they were.

    The tensors are kept themselves (not the IntervalTensor objects, whose boxes an in-place op
    replaces), with their version counters, so that :meth:`is_output` can prove the model's
    output is this layer's output, unchanged.
    """

    def __init__(self, feats: IntervalTensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 out: IntervalTensor) -> None:
        self.center, self.radius = feats.center, feats.radius
        self.weight, self.bias = weight, bias
        self.out, self.out_center, self.out_radius = out, out.center, out.radius
        self._versions = self._current_versions()

    def _current_versions(self) -> tuple[int, ...]:
        tensors = (self.center, self.radius, self.weight, self.bias, self.out_center, self.out_radius)
        try:
            return tuple(t._version for t in tensors if isinstance(t, torch.Tensor))
        except RuntimeError:  # inference-mode tensors keep no version counter (and cannot change in place)
            return ()

    def is_output(self, out: IntervalTensor) -> bool:
        """True only if ``out`` is this layer's output box, untouched by any later (in-place) op."""
        return (
            out is self.out
            and out.center is self.out_center
            and out.radius is self.out_radius
            and self._current_versions() == self._versions
        )


class _LinearRecorder:
    """Remembers the last ``F.linear`` applied to an IntervalTensor (for last-layer elision)."""

    def __init__(self) -> None:
        self.last: _LinearRecord | None = None


_RECORDERS: list[_LinearRecorder] = []


@contextlib.contextmanager
def _record_linear() -> Iterator[_LinearRecorder]:
    rec = _LinearRecorder()
    _RECORDERS.append(rec)
    try:
        yield rec
    finally:
        _RECORDERS.remove(rec)


def _linear_recording(func, args, kwargs):
    out = _linear(func, args, kwargs)
    if _RECORDERS:
        weight = _arg(args, kwargs, 1, "weight")
        bias = _arg(args, kwargs, 2, "bias")
        _RECORDERS[-1].last = _LinearRecord(args[0], weight, bias, out)
    return out


_HANDLERS["linear"] = _linear_recording


def _bound_output(out: Any, kind: type[_BoundTensor]) -> Any:
    """The first output of a model run on bounds (its logits), checked to be bounds of ``kind``."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, kind):
        raise TypeError(f"the model returned {type(out).__name__}, not {kind.propagation} bounds: "
                        "its output does not depend on the input")
    return out


def _forward_interval(model: nn.Module, box: IntervalTensor) -> IntervalTensor:
    return _bound_output(model(box), IntervalTensor)


def interval_bounds(
    model: nn.Module, x: torch.Tensor, eps: float, norm: str = "linf"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of ``model``'s outputs over all inputs within ``eps`` of ``x``.

    Sound for models in eval mode (batch norm uses running statistics); in train
    mode batch norm uses the centers' batch statistics, which is approximate.
    If the model returns a tuple, the first element is bounded. Differentiable
    with respect to the model's parameters.
    """
    out = _forward_interval(model, input_box(x, eps, norm))
    return out.lower, out.upper


def _check_method(method: str) -> None:
    if method not in BOUND_METHODS:
        raise ConfigError(f"unknown bound method {method!r}; valid methods: {', '.join(BOUND_METHODS)}")


def linear_bounds(
    model: nn.Module, x: torch.Tensor, eps: float, norm: str = "linf"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of ``model``'s outputs over the ``eps``-ball from linear (CROWN-style)
    bounds: :func:`interval_bounds`, tightened (never looser). See :mod:`._crown`."""
    from ._crown import linear_bounds as _linear_bounds

    return _linear_bounds(model, x, eps, norm)


def margin_lower_bound(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf", method: str = "interval"
) -> torch.Tensor:
    """Lower bounds of ``logit_y - logit_j`` over the ``eps``-ball, shape ``(N, K)``.

    ``method="interval"`` (the default): interval bound propagation. ``method="crown"``:
    linear bounds (forward-mode CROWN / DeepPoly relaxations, :mod:`._crown`), intersected
    with the interval bounds at every non-linearity, so never looser than ``"interval"``;
    about ``D`` (input entries per example) times the cost. Both are differentiable with
    respect to the model's parameters.

    Entry ``[n, y_n]`` is ``+inf`` so that ``.min(1)`` gives the worst-case
    margin. When the logits come straight out of a final ``F.linear`` (an
    ``nn.Linear`` classifier), the margin matrix is propagated through that
    layer directly ("last-layer elision", Gowal et al. 2018), which is tighter
    than subtracting the logit bounds. The shortcut is taken only when the
    output is provably that layer's output as computed: the same box tensors,
    with unchanged version counters, so an in-place op on the logits
    (``z.mul_(s)``, ``z.add_(b)``) or on the layer's input after it ran sends
    the bound back to the logit intervals (with ``"crown"``: to the logits' linear bounds).
    """
    _check_method(method)
    if method == "crown":
        from ._crown import linear_margin_lower_bound

        return linear_margin_lower_bound(model, x, y, eps, norm)
    with _record_linear() as rec:
        out = _forward_interval(model, input_box(x, eps, norm))
    y = y.to(out.center.device).long()
    last = rec.last
    if last is not None and last.is_output(out) and out.center.dim() == 2:
        weight, bias = last.weight, last.bias
        c, r = last.center, last.radius
        if c.dim() != 2:
            c, r = c.reshape(-1, c.shape[-1]), r.reshape(-1, r.shape[-1])
        diff = weight[y].unsqueeze(1) - weight.unsqueeze(0)  # (N, K, F)
        lb = torch.einsum("nkf,nf->nk", diff, c) - torch.einsum("nkf,nf->nk", diff.abs(), r)
        if bias is not None:
            lb = lb + (bias[y].unsqueeze(1) - bias.unsqueeze(0))
    else:
        lower, upper = out.lower, out.upper
        lb = lower.gather(1, y[:, None]) - upper
    return lb.masked_fill(F.one_hot(y, lb.shape[1]).bool(), float("inf"))


def certified_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str = "linf",
    batch_size: int = 256,
    method: str = "interval",
) -> float:
    """Fraction of points that are correctly classified and certified robust within ``eps``.

    A point counts when the lower bound (``method``: ``"interval"`` or ``"crown"``, see
    :func:`margin_lower_bound`) of every margin ``logit_y - logit_j`` is positive. The
    model is evaluated in eval mode (its mode is restored afterwards); inputs move to the
    model's device.
    """
    _check_norm(norm)
    _check_method(method)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} points but y has {len(y)}")
    if len(x) == 0:
        raise ValueError("certified_accuracy needs at least one point")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = model_device(model, default=x.device)
    certified = 0
    with preserved_mode(model), torch.no_grad():
        model.eval()
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            yb = y[start:start + batch_size].to(device)
            correct = logits_of(model(xb)).argmax(1) == yb
            margin = margin_lower_bound(model, xb, yb, eps, norm, method=method).min(1).values
            certified += int((correct & (margin > 0)).sum())
    result = certified / len(x)
    _logger.debug("certified accuracy %.4f at eps=%g (%s, %s bounds) on %d points", result, eps, norm, method, len(x))
    return result
