"""Linear (CROWN-style) bounds through any forward built from standard torch ops.

A :class:`LinearBoundTensor` carries, for every entry ``z`` of a tensor, a lower and an
upper *linear function of the input* ``A_l x + b_l <= z <= A_u x + b_u`` that hold for every
input ``x`` of the perturbation set, plus a box ``[lower, upper]``. It flows through a
model's ordinary ``forward`` exactly as :class:`~.bounds.IntervalTensor` does (a
``torch.Tensor`` subclass whose ``__torch_function__`` replaces each op), so it goes
through NNI's differentiable supernets and frozen models alike, and stays differentiable
with respect to the weights and architecture parameters.

This is the forward (input-to-output) mode of linear relaxation bounds: the symbolic
intervals of DeepPoly (Singh et al., POPL 2019) and the forward mode of CROWN (Zhang et
al., NeurIPS 2018; Xu et al., NeurIPS 2020, "auto_LiRPA"), with CROWN's ReLU
relaxation: the upper chord ``u (x - l) / (u - l)`` and the adaptive lower slope (1 when
``u > -l``, else 0) on unstable neurons. Affine ops (linear, convolutions, batch norm in
eval mode, average pooling, sums, products with plain tensors, padding, concatenation,
shape ops) are exact on the linear functions; the box of every op is the interval bound of
:mod:`.bounds` applied to the (tightened) boxes of its inputs; at every non-linearity the
box is intersected with the concretised linear bounds before the relaxation is chosen, so
the bounds are never looser than interval bounds (docs/evaluator.md, "Certified bounds (interval
and CROWN)"; forward mode, not the backward pass of CROWN or CNN-Cert: docs/fidelity.md, "Bounds").
Sigmoid and tanh take DeepPoly's chord / tangent relaxation, max pooling DeepPoly's. Ops the
linear path does not model but the interval path does (other monotone activations, products
of two bounded tensors, adaptive max pooling, ...) fall back to constant linear functions from
their interval box: sound, as tight as interval bounds there, but correlations with the
input are lost at that point.

The two functions are stored as their midpoint ``M = (L + U) / 2`` and half-gap
``G = (U - L) / 2`` (the symbolic intervals of ReluVal, Wang et al., USENIX Security 2018):
an affine map ``W`` sends them to ``W M`` and ``|W| G``, which is exactly the sign split
``W+ L + W- U`` of the lower function (and its mirror for the upper one) at half the cost.
Coefficients have shape ``(D, *value_shape)`` where ``D`` is the number of input entries of
one example; every entry also records which example it belongs to (``emap``), so ops that
move the batch dimension (the stack of candidate outputs of a DARTS mixed op) are handled.
Memory and time are about ``D`` times those of the activations:
:func:`linear_margin_lower_bound` processes the batch in chunks in eval mode.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import bounds as _ibp
from .bounds import IntervalTensor, UnsupportedOpError, _arg

_logger = logging.getLogger(__name__)

__all__ = ["LinearBoundTensor", "linear_bounds", "linear_margin_lower_bound"]

#: Entries of one chunk times input entries per example (``D``) in eval mode: 64 digits
#: (D = 64) or 5 MNIST images (D = 784) per chunk.
CHUNK_ELEMENTS = 4096


@dataclass
class _InputSet:
    """The perturbation set of every example: the clamped box, and for L2 the ball as well."""

    center_t: torch.Tensor  # (D, N): box centers, one column per example
    radius_t: torch.Tensor  # (D, N)
    point_t: torch.Tensor  # (D, N): the clean inputs
    norm: str
    eps: float

    @property
    def dim(self) -> int:
        return self.center_t.shape[0]


class LinearBoundTensor(_ibp._BoundTensor):
    """Lower and upper linear functions of the input, and a box, that flow through torch ops.

    The functions are ``L = (mA - gA) x + (mb - gb)`` and ``U = (mA + gA) x + (mb + gb)``:
    ``mA`` / ``gA`` have shape ``(D, *shape)``, ``mb`` / ``gb``, ``center`` and ``radius``
    have ``shape``. ``gA is None`` (and ``gb is None``) when ``L = U``: the entry is an exact
    affine function of the input so far, and each op is applied once. ``emap`` (long,
    broadcastable to ``shape``) gives the example of every entry (-1: a constant entry).
    """

    mA: torch.Tensor
    mb: torch.Tensor
    gA: torch.Tensor | None
    gb: torch.Tensor | None
    emap: torch.Tensor
    ctx: _InputSet
    propagation = "linear"

    @staticmethod
    def __new__(cls, mA: torch.Tensor, mb: torch.Tensor, gA: torch.Tensor | None, gb: torch.Tensor | None,
                center: torch.Tensor, radius: torch.Tensor, emap: torch.Tensor,
                ctx: _InputSet) -> "LinearBoundTensor":
        shape = tuple(center.shape)
        if tuple(mb.shape) != shape or tuple(mA.shape[1:]) != shape or emap.dim() != len(shape):
            raise ValueError(f"inconsistent linear bound shapes: value {shape}, bias {tuple(mb.shape)}, "
                             f"coefficients {tuple(mA.shape)}, example map {tuple(emap.shape)}")
        if (gA is None) != (gb is None):
            raise ValueError("gA and gb must both be given or both be None")
        out = cls._wrapper(center)
        out.mA, out.mb, out.gA, out.gb = mA, mb, gA, gb
        out.center, out.radius, out.emap, out.ctx = center, radius, emap, ctx
        return out

    @property
    def exact(self) -> bool:
        """Whether the lower and upper functions are one and the same (no relaxation yet)."""
        return self.gA is None

    def lower_function(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, b)`` of the lower linear function."""
        if self.gA is None:
            return self.mA, self.mb
        return self.mA - self.gA, self.mb - self.gb

    def upper_function(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, b)`` of the upper linear function."""
        if self.gA is None:
            return self.mA, self.mb
        return self.mA + self.gA, self.mb + self.gb

    def box(self) -> IntervalTensor:
        return IntervalTensor(self.center, self.radius)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"LinearBoundTensor(shape={tuple(self.center.shape)}, inputs={self.ctx.dim}, exact={self.exact})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        name = _ibp._op_name(func)
        if _ibp._passes_through(func, name):
            return func(*_lmap(args, _center), **_lmap(kwargs, _center))
        own = _OWN.get(name)
        if own is not None:
            return own(func, args, kwargs)
        interval = _ibp._HANDLERS.get(name)
        if interval is None:
            raise UnsupportedOpError(
                f"linear (CROWN) bound propagation does not support the op '{name}' ({func}); "
                f"supported ops: {sorted(_ibp._HANDLERS)}", op=name
            )
        # the interval bound of the op on the (tightened) boxes: the box of the result
        box = interval(func, _lmap(args, _as_box), _lmap(kwargs, _as_box))
        handler = _HANDLERS.get(name)
        if handler is None:
            _logger.debug("linear bounds: '%s' uses its interval box (constant linear bounds)", name)
            return _constant(box, _ctx_of(args, kwargs))
        return handler(func, args, kwargs, box)


# --- plumbing -------------------------------------------------------------------------

_Handler = Callable[[Callable[..., Any], tuple, dict, Any], Any]
_HANDLERS: dict[str, _Handler] = {}
_OWN: dict[str, Callable[[Callable[..., Any], tuple, dict], Any]] = {}


_register = _ibp._registrar(_HANDLERS)
_center = _ibp._center


def _lmap(obj: Any, fn: Callable[[LinearBoundTensor], Any]) -> Any:
    """Apply ``fn`` to every LinearBoundTensor inside nested lists/tuples/dicts."""
    return _ibp._map(obj, fn, LinearBoundTensor)


def _as_box(t: LinearBoundTensor) -> IntervalTensor:
    return t.box()


def _ctx_of(args: Any, kwargs: dict) -> _InputSet:
    found: list[_InputSet] = []
    _lmap((args, kwargs), lambda t: found.append(t.ctx))
    return found[0]


def _zeros(ctx: _InputSet, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """Zero coefficients for a value of ``shape`` (an expanded view: no memory)."""
    return like.new_zeros(()).expand(ctx.dim, *shape)


def _no_example(shape: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.full((1,) * len(shape), -1, dtype=torch.long, device=device)


def _constant(box: Any, ctx: _InputSet) -> Any:
    """Constant linear functions ``lower <= z <= upper`` from an interval box (or boxes)."""
    if isinstance(box, IntervalTensor):
        c, r = box.center, box.radius
        zero = _zeros(ctx, c.shape, c)
        return LinearBoundTensor(zero, c, zero, r, c, r, _no_example(c.shape, c.device), ctx)
    if isinstance(box, (list, tuple)):
        return type(box)(_constant(b, ctx) for b in box)
    return box


def _as_linear(x: Any, ctx: _InputSet, like: torch.Tensor) -> LinearBoundTensor:
    """A plain tensor or number as an exact constant LinearBoundTensor."""
    if isinstance(x, LinearBoundTensor):
        return x
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    return LinearBoundTensor(_zeros(ctx, t.shape, t), t, None, None, t, torch.zeros_like(t),
                             _no_example(t.shape, t.device), ctx)


def _make(mA: torch.Tensor, mb: torch.Tensor, gA: torch.Tensor | None, gb: torch.Tensor | None,
          box: IntervalTensor, emap: torch.Tensor, ctx: _InputSet) -> LinearBoundTensor:
    return LinearBoundTensor(mA, mb, gA, gb, box.center, box.radius, emap, ctx)


def _like(t: LinearBoundTensor, coef: Callable[[torch.Tensor], torch.Tensor],
          val: Callable[[torch.Tensor], torch.Tensor], box: IntervalTensor,
          emap: torch.Tensor | None = None) -> LinearBoundTensor:
    """Apply a map with non-negative coefficients (or one that moves entries) to both functions."""
    gA, gb = (None, None) if t.exact else (coef(t.gA), val(t.gb))
    return _make(coef(t.mA), val(t.mb), gA, gb, box, t.emap if emap is None else emap, t.ctx)


def _inplace(target: Any, result: LinearBoundTensor) -> LinearBoundTensor:
    """Emulate an in-place op: the target object takes the new bounds."""
    if not isinstance(target, LinearBoundTensor):
        raise UnsupportedOpError("in-place linear-bound op on a plain tensor", op="in-place op on a plain tensor")
    target.mA, target.mb, target.gA, target.gb = result.mA, result.mb, result.gA, result.gb
    target.center, target.radius, target.emap = result.center, result.radius, result.emap
    return target


def _lift(t: torch.Tensor, ndim: int, lead: int = 0) -> torch.Tensor:
    """Insert size-1 dims after the first ``lead`` dims until ``t`` has ``ndim + lead`` dims."""
    while t.dim() < ndim + lead:
        t = t.unsqueeze(lead)
    return t


def _broadcast(t: LinearBoundTensor, shape: Sequence[int]) -> LinearBoundTensor:
    """``t`` with its functions and example map broadcast to the value shape ``shape`` (box unchanged)."""
    shape = tuple(shape)
    if tuple(t.center.shape) == shape:
        return t
    n = len(shape)

    def coef(a: torch.Tensor) -> torch.Tensor:
        return _lift(a, n, lead=1).expand(t.ctx.dim, *shape)

    def val(b: torch.Tensor) -> torch.Tensor:
        return _lift(b, n).expand(shape)

    box = IntervalTensor(val(t.center), val(t.radius))
    return _like(t, coef, val, box, emap=_lift(t.emap, n))


def _merge_emap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """The example map of an entrywise combination, or None if entries of different examples meet."""
    if a is b or (a.shape == b.shape and torch.equal(a, b)):
        return a
    n = max(a.dim(), b.dim())
    a, b = _lift(a, n), _lift(b, n)
    if not bool(((a == b) | (a < 0) | (b < 0)).all()):
        return None
    return torch.maximum(a, b)


def _compress(emap: torch.Tensor) -> torch.Tensor:
    """Shrink every dim along which the example map is constant (constants aside) to size 1."""
    for d in range(emap.dim()):
        if emap.shape[d] > 1:
            m = emap.amax(d, keepdim=True)
            if bool(((emap == m) | (emap < 0)).all()):
                emap = m
    return emap


def _rows(t: LinearBoundTensor) -> bool:
    """Whether each slice along dim 0 belongs to a single example (what batched ops need)."""
    if all(s == 1 for s in t.emap.shape[1:]):
        return True
    t.emap = _compress(t.emap)
    return all(s == 1 for s in t.emap.shape[1:])


# --- concretisation -----------------------------------------------------------------------

def _dot(A: torch.Tensor, cols: torch.Tensor, emap: torch.Tensor) -> torch.Tensor:
    """``sum_d A[d, e] * cols[d, example(e)]`` for every entry ``e`` (shape ``A.shape[1:]``)."""
    shape = A.shape[1:]
    if len(shape) >= 1 and all(s == 1 for s in emap.shape[1:]):
        n0 = shape[0]
        per_row = cols[:, emap.reshape(-1).clamp(min=0)].expand(-1, n0)  # (D, n0)
        return torch.einsum("dnf,dn->nf", A.reshape(A.shape[0], n0, -1), per_row).reshape(shape)
    return (A * cols[:, emap.clamp(min=0)]).sum(0)


def _extreme(A: torch.Tensor, b: torch.Tensor, emap: torch.Tensor, ctx: _InputSet, lower: bool) -> torch.Tensor:
    """The minimum (``lower``) or maximum of ``A x + b`` over each entry's input set."""
    sign = -1.0 if lower else 1.0
    box = _dot(A, ctx.center_t, emap) + sign * _dot(A.abs(), ctx.radius_t, emap)
    if ctx.norm == "l2":
        ball = _dot(A, ctx.point_t, emap) + sign * ctx.eps * torch.linalg.vector_norm(A, dim=0)
        box = torch.maximum(box, ball) if lower else torch.minimum(box, ball)
    return box + b


def _tight(t: LinearBoundTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concrete bounds of ``t``: its box intersected with its concretised linear functions."""
    ctx = t.ctx
    if t.exact:
        mid = _dot(t.mA, ctx.center_t, t.emap)
        dev = _dot(t.mA.abs(), ctx.radius_t, t.emap)
        lo, hi = mid - dev, mid + dev
        if ctx.norm == "l2":
            p = _dot(t.mA, ctx.point_t, t.emap)
            n = ctx.eps * torch.linalg.vector_norm(t.mA, dim=0)
            lo, hi = torch.maximum(lo, p - n), torch.minimum(hi, p + n)
        lo, hi = lo + t.mb, hi + t.mb
    else:
        lo = _extreme(*t.lower_function(), t.emap, ctx, lower=True)
        hi = _extreme(*t.upper_function(), t.emap, ctx, lower=False)
    lo = torch.maximum(lo, t.lower)
    hi = torch.minimum(hi, t.upper)
    return lo, torch.maximum(hi, lo)


def _from_functions(lA: torch.Tensor, lb: torch.Tensor, uA: torch.Tensor, ub: torch.Tensor,
                    box: IntervalTensor, emap: torch.Tensor, ctx: _InputSet) -> LinearBoundTensor:
    return _make((uA + lA) / 2, (ub + lb) / 2, (uA - lA) / 2, (ub - lb) / 2, box, emap, ctx)


# --- shape ops ------------------------------------------------------------------------------

_CASTS = ("to", "float", "double", "half", "bfloat16", "cpu", "cuda", "type_as")


def _gather_like(t: LinearBoundTensor, index: torch.Tensor, box: IntervalTensor) -> LinearBoundTensor:
    """The entries of ``t`` at the flat positions ``index`` (any shape), with their bounds."""
    D = t.ctx.dim
    flat = index.reshape(-1)
    n = flat.numel()
    out_shape = tuple(index.shape)
    start = int(flat[0]) if n else 0
    contiguous = n > 0 and bool((flat == torch.arange(start, start + n, device=flat.device)).all())

    def coef(A: torch.Tensor) -> torch.Tensor:
        A = A.reshape(D, -1)
        A = A[:, start:start + n] if contiguous else A.index_select(1, flat)
        return A.reshape(D, *out_shape)

    def val(b: torch.Tensor) -> torch.Tensor:
        b = b.reshape(-1)
        b = b[start:start + n] if contiguous else b.index_select(0, flat)
        return b.reshape(out_shape)

    emap = t.emap.expand(t.center.shape).reshape(-1).index_select(0, flat).reshape(out_shape)
    return _like(t, coef, val, box, emap=_compress(emap))


def _structural(func, args, kwargs, box):
    """Ops that only move or copy entries: find where each output entry comes from, gather."""
    x = args[0]
    name = _ibp._op_name(func)
    if name in ("contiguous", "clone"):
        return _like(x, lambda a: a, lambda b: b, box)
    if name == "detach":
        return _like(x, torch.Tensor.detach, torch.Tensor.detach, box)
    if name in _CASTS:
        rest = _lmap(args[1:], _center)
        kw = _lmap(kwargs, _center)

        def cast(a: torch.Tensor) -> torch.Tensor:
            return func(a, *rest, **kw)

        return _like(x, cast, cast, box, emap=x.emap.to(box.center.device))
    index = torch.arange(x.center.numel(), dtype=torch.float64, device=x.center.device).view(x.center.shape)
    moved = func(index, *_lmap(args[1:], _center), **_lmap(kwargs, _center))
    if isinstance(moved, torch.Tensor):
        return _gather_like(x, moved.round().long(), box)
    return type(moved)(_gather_like(x, m.round().long(), b) for m, b in zip(moved, box))


for _name, _fn in list(_ibp._HANDLERS.items()):
    if _fn is _ibp._structural:
        _HANDLERS[_name] = _structural


def _unsqueeze(t: LinearBoundTensor, dim: int) -> LinearBoundTensor:
    box = IntervalTensor(t.center.unsqueeze(dim), t.radius.unsqueeze(dim))
    return _like(t, lambda a: a.unsqueeze(dim + 1), lambda b: b.unsqueeze(dim), box, emap=t.emap.unsqueeze(dim))


@_register("cat", "concat", "concatenate", "stack")
def _concat(func, args, kwargs, box):
    tensors = args[0]
    ctx = _ctx_of(args, kwargs)
    like = next(t.center for t in tensors if isinstance(t, LinearBoundTensor))
    parts = [_as_linear(t, ctx, like) for t in tensors]
    dim = _arg(args, kwargs, 1, "dim", 0)
    if _ibp._op_name(func) == "stack":
        dim = dim % (parts[0].center.dim() + 1)
        parts = [_unsqueeze(p, dim) for p in parts]
    else:
        dim = dim % parts[0].center.dim()
    mA = torch.cat([p.mA for p in parts], dim + 1)
    mb = torch.cat([p.mb for p in parts], dim)
    if all(p.exact for p in parts):
        gA = gb = None
    else:
        gA = torch.cat([_zeros(ctx, p.center.shape, like) if p.exact else p.gA for p in parts], dim + 1)
        gb = torch.cat([torch.zeros_like(p.mb) if p.exact else p.gb for p in parts], dim)
    first = parts[0].emap
    if all(p.emap.shape[dim] == 1 and p.emap.shape == first.shape and torch.equal(p.emap, first) for p in parts):
        emap = first
    else:
        emap = _compress(torch.cat([p.emap.expand(p.center.shape) for p in parts], dim))
    return _make(mA, mb, gA, gb, box, emap, ctx)


@_register("pad")
def _pad(func, args, kwargs, box):
    x = args[0]
    pad, mode, value = _ibp._pad_args(args, kwargs)
    if mode != "constant":
        index = torch.arange(x.center.numel(), dtype=torch.float64, device=x.center.device).view(x.center.shape)
        return _gather_like(x, F.pad(index, pad, mode=mode).round().long(), box)
    fill = 0.0 if value is None else value
    emap = x.emap
    for k in range(len(pad) // 2):
        d = emap.dim() - 1 - k
        if emap.shape[d] != 1:
            emap = F.pad(emap, [0, 0] * k + [pad[2 * k], pad[2 * k + 1]], value=-1)
    gA, gb = (None, None) if x.exact else (F.pad(x.gA, pad), F.pad(x.gb, pad))
    return _make(F.pad(x.mA, pad), F.pad(x.mb, pad, value=fill), gA, gb, box, emap, x.ctx)


# --- affine ops -------------------------------------------------------------------------------

def _affine(t: LinearBoundTensor, apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            weight: torch.Tensor, bias: Any, box: IntervalTensor,
            emap: torch.Tensor | None = None) -> LinearBoundTensor:
    """``apply(t, weight) + bias`` for a map ``apply`` linear in its first argument (no bias) with a
    signed ``weight``: midpoints through ``weight``, half-gaps through ``|weight|``."""
    mA, mb = apply(t.mA, weight), apply(t.mb, weight)
    if bias is not None:
        mb = mb + bias
    gA, gb = (None, None) if t.exact else (apply(t.gA, weight.abs()), apply(t.gb, weight.abs()))
    return _make(mA, mb, gA, gb, box, t.emap if emap is None else emap, t.ctx)


class _LinearRecord:
    """The last ``F.linear`` on a LinearBoundTensor: input bounds, weights and output, as they were
    (the linear twin of :class:`~.bounds._LinearRecord`, for last-layer elision)."""

    def __init__(self, feats: LinearBoundTensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 out: LinearBoundTensor) -> None:
        self.feats = (feats.mA, feats.mb, feats.gA, feats.gb, feats.center, feats.radius, feats.emap)
        self.weight, self.bias = weight, bias
        self.out = out
        self.out_fields = (out.mA, out.mb, out.gA, out.gb, out.center, out.radius)
        self._versions = self._current_versions()

    def _current_versions(self) -> tuple[int, ...]:
        tensors = self.feats[:6] + (self.weight, self.bias) + self.out_fields
        try:
            return tuple(t._version for t in tensors if isinstance(t, torch.Tensor))
        except RuntimeError:  # inference-mode tensors keep no version counter
            return ()

    def is_output(self, out: LinearBoundTensor) -> bool:
        """True only if ``out`` is this layer's output, untouched by any later (in-place) op."""
        fields = (out.mA, out.mb, out.gA, out.gb, out.center, out.radius)
        return (
            out is self.out
            and all(a is b for a, b in zip(fields, self.out_fields))
            and self._current_versions() == self._versions
        )


_RECORDERS: list[list[_LinearRecord | None]] = []


@contextlib.contextmanager
def _record_linear() -> Iterator[list[_LinearRecord | None]]:
    slot: list[_LinearRecord | None] = [None]
    _RECORDERS.append(slot)
    try:
        yield slot
    finally:
        _RECORDERS.remove(slot)


@_register("linear")
def _linear(func, args, kwargs, box):
    x = args[0]
    weight, bias = _ibp._weight_and_bias(args, kwargs)
    if not _rows(x) and x.emap.shape[-1] != 1:
        return _constant(box, x.ctx)
    out = _affine(x, F.linear, weight, bias, box)
    if _RECORDERS:
        _RECORDERS[-1][0] = _LinearRecord(x, weight, bias, out)
    return out


def _folded(func: Callable[..., torch.Tensor], D: int, *rest: Any, **kw: Any) -> Callable[..., torch.Tensor]:
    """``func`` on coefficients ``(D, n0, ...)``: ``D`` folds into the batch dim and back."""

    def apply(A: torch.Tensor, *weights: Any) -> torch.Tensor:
        out = func(A.reshape(A.shape[0] * A.shape[1], *A.shape[2:]), *weights, *rest, **kw)
        return out.reshape(D, out.shape[0] // D, *out.shape[1:])

    return apply


@_register("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv(func, args, kwargs, box):
    x = args[0]
    weight, bias = _ibp._weight_and_bias(args, kwargs)
    rest_args, rest_kwargs = _ibp._conv_rest(args, kwargs)
    spatial = int(_ibp._op_name(func)[-2])
    if x.center.dim() != spatial + 2 or not _rows(x):
        return _constant(box, x.ctx)
    coef = _folded(func, x.ctx.dim, None, *rest_args, **rest_kwargs)

    def apply(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if t.dim() == spatial + 3:  # coefficients
            return coef(t, w)
        return func(t, w, None, *rest_args, **rest_kwargs)

    shaped = None if bias is None else bias.view(-1, *([1] * spatial))
    return _affine(x, apply, weight, shaped, box)


@_register("matmul", "mm", "bmm", "__matmul__", "__rmatmul__")
def _matmul(func, args, kwargs, box):
    a, b = args[0], args[1]
    if _ibp._op_name(func) == "__rmatmul__":
        a, b = b, a
    x, m = (a, b) if isinstance(a, LinearBoundTensor) else (b, a)
    right = x is a  # x @ m
    if m.dim() > x.center.dim() or x.center.dim() < 2 or m.dim() < 2:
        return _constant(box, x.ctx)
    emap = _compress(x.emap)
    if emap.shape[-1 if right else -2] != 1:  # the contracted dim must belong to one example
        return _constant(box, x.ctx)

    def apply(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.matmul(t, w) if right else torch.matmul(w, t)

    return _affine(x, apply, m, None, box, emap=emap)


def _scale(x: LinearBoundTensor, s: Any, shift: Any, box: IntervalTensor) -> LinearBoundTensor:
    """``x * s + shift`` for a plain ``s`` (tensor or number, any sign) and plain ``shift``."""
    shape = tuple(box.center.shape)
    x = _broadcast(x, shape)
    D = x.ctx.dim
    if isinstance(s, torch.Tensor):
        mA, mb = x.mA * s, x.mb * s
        gA, gb = (None, None) if x.exact else (x.gA * s.abs(), x.gb * s.abs())
    elif float(s) == 1.0:
        mA, mb, gA, gb = x.mA, x.mb, x.gA, x.gb
    else:
        s = float(s)
        mA, mb = x.mA * s, x.mb * s
        gA, gb = (None, None) if x.exact else (x.gA * abs(s), x.gb * abs(s))
    if shift is not None:
        mb = mb + shift
    mA, mb = mA.expand(D, *shape), mb.expand(shape)
    if gA is not None:
        gA, gb = gA.expand(D, *shape), gb.expand(shape)
    return _make(mA, mb, gA, gb, box, x.emap, x.ctx)


@_register("batch_norm")
def _batch_norm(func, args, kwargs, box):
    x = args[0]
    scale, shift = _ibp._batch_norm_affine(x.center, args, kwargs)
    return _scale(x, scale, shift, box)


def _add_linear(a: Any, b: Any, sign: float, box: IntervalTensor) -> LinearBoundTensor:
    """``a + sign * b`` where at least one operand is a LinearBoundTensor."""
    if not isinstance(b, LinearBoundTensor):
        return _scale(a, 1.0, sign * b, box)
    if not isinstance(a, LinearBoundTensor):
        return _scale(b, sign, a, box)
    shape = tuple(box.center.shape)
    emap = _merge_emap(a.emap, b.emap)
    if emap is None:
        _logger.debug("linear bounds: a sum of entries of different examples uses its interval box")
        return _constant(box, a.ctx)
    a, b = _broadcast(a, shape), _broadcast(b, shape)
    # a - b: lower a.L - b.U, upper a.U - b.L, so midpoints subtract and half-gaps add
    mA = a.mA + b.mA if sign == 1 else a.mA + sign * b.mA
    mb = a.mb + sign * b.mb
    if b.exact:
        gA, gb = a.gA, a.gb
    else:
        b_gA = b.gA if abs(sign) == 1 else abs(sign) * b.gA
        b_gb = abs(sign) * b.gb
        gA, gb = (b_gA, b_gb) if a.exact else (a.gA + b_gA, a.gb + b_gb)
    return _make(mA, mb, gA, gb, box, _lift(emap, len(shape)), a.ctx)


_INPLACE_ARITH = ("add_", "__iadd__", "sub_", "__isub__", "mul_", "__imul__", "div_", "__itruediv__")


def _maybe_inplace(func, args, out: LinearBoundTensor) -> LinearBoundTensor:
    if _ibp._op_name(func) in _INPLACE_ARITH:
        return _inplace(args[0], out)
    return out


@_register("add", "__add__", "__radd__", "add_", "__iadd__")
def _add(func, args, kwargs, box):
    return _maybe_inplace(func, args, _add_linear(args[0], args[1], kwargs.get("alpha", 1), box))


@_register("sub", "subtract", "__sub__", "sub_", "__isub__", "__rsub__", "rsub")
def _sub(func, args, kwargs, box):
    alpha = kwargs.get("alpha", 1)
    if _ibp._op_name(func) in ("__rsub__", "rsub"):
        return _add_linear(args[1], args[0], -alpha, box)
    return _maybe_inplace(func, args, _add_linear(args[0], args[1], -alpha, box))


@_register("neg", "__neg__", "negative")
def _neg(func, args, kwargs, box):
    return _scale(args[0], -1.0, None, box)


@_register("__pos__", "positive")
def _pos(func, args, kwargs, box):
    return args[0]


@_register("mul", "multiply", "__mul__", "__rmul__", "mul_", "__imul__")
def _mul(func, args, kwargs, box):
    a, b = args[0], args[1]
    if not isinstance(a, LinearBoundTensor):
        a, b = b, a
    if isinstance(b, LinearBoundTensor):  # a product of two bounded tensors: its interval box
        return _maybe_inplace(func, args, _constant(box, a.ctx))
    return _maybe_inplace(func, args, _scale(a, b, None, box))


@_register("div", "divide", "true_divide", "__truediv__", "div_", "__itruediv__")
def _div(func, args, kwargs, box):
    a, b = args[0], args[1]
    inv = 1.0 / b if isinstance(b, torch.Tensor) else 1.0 / float(b)
    return _maybe_inplace(func, args, _scale(a, inv, None, box))


def _reduce_emap(emap: torch.Tensor, dims: Sequence[int], keepdim: bool) -> torch.Tensor | None:
    for d in dims:
        if emap.shape[d] > 1:
            m = emap.amax(d, keepdim=True)
            if not bool(((emap == m) | (emap < 0)).all()):
                return None
            emap = m
    if not keepdim:
        for d in sorted(dims, reverse=True):
            emap = emap.squeeze(d)
    return emap


@_register("sum", "mean")
def _sum(func, args, kwargs, box):
    x = args[0]
    ndim = x.center.dim()
    dim = _arg(args, kwargs, 1, "dim", None)
    keepdim = bool(_arg(args, kwargs, 2, "keepdim", False))
    if set(kwargs) - {"dim", "keepdim"} or len(args) > 3:
        return _constant(box, x.ctx)
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        dims = list(range(ndim))
    elif isinstance(dim, int):
        dims = [dim % ndim]
    else:
        dims = sorted({int(d) % ndim for d in dim})
    emap = _reduce_emap(x.emap, dims, keepdim)
    if emap is None:  # entries of different examples summed: the interval box
        return _constant(box, x.ctx)
    op = torch.sum if _ibp._op_name(func) == "sum" else torch.mean
    shifted = [d + 1 for d in dims]
    return _like(x, lambda a: op(a, dim=shifted, keepdim=keepdim), lambda b: op(b, dim=dims, keepdim=keepdim),
                 box, emap=emap)


@_register("avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
           "adaptive_avg_pool3d")
def _avg_pool(func, args, kwargs, box):
    """Average pooling acts on each channel alike: ``D`` folds into the leading dim."""
    x = args[0]
    if not _rows(x):
        return _constant(box, x.ctx)
    rest = args[1:]
    return _like(x, _folded(func, x.ctx.dim, *rest, **kwargs), lambda b: func(b, *rest, **kwargs), box)


# --- piecewise-linear activations --------------------------------------------------------------

def _relax_clamp(l: torch.Tensor, u: torch.Tensor, a: float | None, b: float | None) -> tuple[torch.Tensor, ...]:
    """Slopes and offsets ``(s_l, t_l, s_u, t_u)`` with ``s_l x + t_l <= clamp(x, a, b) <= s_u x + t_u``
    on ``[l, u]`` (``a`` / ``b`` None: no bound on that side; ReLU is ``a = 0``).

    Lower kink only: CROWN's upper chord and adaptive lower slope (1 when ``u - a > a - l``,
    else 0). Upper kink only: the mirror image. Both kinks: below, the line through
    ``(a, a)`` and ``(u, b)`` or the constant ``a``; above, the line through ``(l, a)`` and
    ``(b, b)`` or the constant ``b`` (the same rule picks).
    """
    one, zero = torch.ones_like(l), torch.zeros_like(l)
    s_l, t_l, s_u, t_u = one, zero, one, zero
    no = torch.zeros_like(l, dtype=torch.bool)
    low = (l < a) & (u > a) if a is not None else no
    high = (l < b) & (u > b) if b is not None else no
    # One kink: (level, where the output is flat at it, where only this kink is crossed, the chord's
    # rise over [l, u], the chord's offset, whether the identity beats the flat line, chord above).
    kinks = []
    if a is not None:
        kinks.append((a, u <= a, low & ~high, u - a, lambda c: a - c * l, (u - a) > (a - l), True))
    if b is not None:
        kinks.append((b, l >= b, high & ~low, b - l, lambda c: l - c * l, (b - l) > (u - b), False))
    for level, flat, only, rise, offset, keep, chord_above in kinks:
        s_l, t_l = torch.where(flat, zero, s_l), torch.where(flat, zero + level, t_l)
        s_u, t_u = torch.where(flat, zero, s_u), torch.where(flat, zero + level, t_u)
        chord = torch.where(only, rise / torch.where(only, u - l, one), zero)
        chord_line = (torch.where(only, chord, s_u if chord_above else s_l),
                      torch.where(only, offset(chord), t_u if chord_above else t_l))
        step_line = (torch.where(only, keep.to(l.dtype), s_l if chord_above else s_u),
                     torch.where(only, torch.where(keep, zero, zero + level), t_l if chord_above else t_u))
        (s_u, t_u), (s_l, t_l) = (chord_line, step_line) if chord_above else (step_line, chord_line)
    if a is not None and b is not None:
        both = low & high
        slope = torch.where(both, (b - a) / torch.where(both, u - a, one), zero)
        use = (u - a) > (a - l)
        s_l = torch.where(both, torch.where(use, slope, zero), s_l)
        t_l = torch.where(both, torch.where(use, a - slope * a, zero + a), t_l)
        slope = torch.where(both, (b - a) / torch.where(both, b - l, one), zero)
        use = (b - l) > (u - b)
        s_u = torch.where(both, torch.where(use, slope, zero), s_u)
        t_u = torch.where(both, torch.where(use, b - slope * b, zero + b), t_u)
    return s_l, t_l, s_u, t_u


def _relax_leaky(l: torch.Tensor, u: torch.Tensor, slope: float) -> tuple[torch.Tensor, ...]:
    """``max(x, slope * x)`` for ``0 <= slope <= 1``: the chord above, slope 1 or ``slope`` below."""
    one, zero = torch.ones_like(l), torch.zeros_like(l)
    neg = u <= 0
    mixed = (l < 0) & (u > 0)
    chord = torch.where(mixed, (u - slope * l) / torch.where(mixed, u - l, one), zero)
    s_u = torch.where(neg, zero + slope, torch.where(mixed, chord, one))
    t_u = torch.where(mixed, slope * l - chord * l, zero)
    s_l = torch.where(neg, zero + slope, torch.where(mixed, torch.where(u > -l, one, zero + slope), one))
    return s_l, zero, s_u, t_u


def _relax_s_shaped(l: torch.Tensor, u: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor],
                    grad: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """DeepPoly's relaxation of sigmoid / tanh (Singh et al., POPL 2019): the chord on the side
    where the function is convex or concave, else lines through the end points with the smaller
    end-point slope (the derivative is unimodal, so no point of ``[l, u]`` has a smaller one)."""
    fl, fu = fn(l), fn(u)
    wide = (u - l) > 1e-6
    chord = torch.where(wide, (fu - fl) / torch.where(wide, u - l, torch.ones_like(l)), grad(l))
    tangent = torch.minimum(grad(l), grad(u))
    s_l = torch.where(l >= 0, chord, tangent)
    s_u = torch.where(u <= 0, chord, tangent)
    return s_l, fl - s_l * l, s_u, fu - s_u * u


def _sigmoid_grad(v: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(v)
    return s * (1 - s)


def _tanh_grad(v: torch.Tensor) -> torch.Tensor:
    return 1 - torch.tanh(v) ** 2


def _activation_params(name: str, args: tuple, kwargs: dict) -> tuple[str, float | None, float | None] | None:
    base = name.rstrip("_")
    if base == "relu":
        return "clamp", 0.0, None
    if base == "relu6":
        return "clamp", 0.0, 6.0
    if base == "hardtanh":
        return "clamp", float(_arg(args, kwargs, 1, "min_val", -1.0)), float(_arg(args, kwargs, 2, "max_val", 1.0))
    if base in ("clamp", "clip"):
        lo, hi = _arg(args, kwargs, 1, "min", None), _arg(args, kwargs, 2, "max", None)
        if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
            return None
        return "clamp", (None if lo is None else float(lo)), (None if hi is None else float(hi))
    if base == "clamp_min":
        lo = _arg(args, kwargs, 1, "min")
        return None if isinstance(lo, torch.Tensor) else ("clamp", float(lo), None)
    if base == "clamp_max":
        hi = _arg(args, kwargs, 1, "max")
        return None if isinstance(hi, torch.Tensor) else ("clamp", None, float(hi))
    if base == "leaky_relu":
        slope = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
        return ("leaky", slope, None) if 0 <= slope <= 1 else None
    if base in ("sigmoid", "tanh"):
        return base, None, None
    return None


_ACTIVATIONS = ("relu", "relu_", "relu6", "relu6_", "hardtanh", "hardtanh_", "clamp", "clamp_", "clip", "clip_",
                "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "leaky_relu", "leaky_relu_",
                "sigmoid", "sigmoid_", "tanh", "tanh_")


@_register(*_ACTIVATIONS)
def _activation(func, args, kwargs, box):
    """Piecewise-linear activations, sigmoid and tanh: relax on the tightened box, keep that box."""
    x = args[0]
    name = _ibp._op_name(func)
    params = _activation_params(name, args, kwargs)
    inplace = name.endswith("_") or bool(kwargs.get("inplace", False))
    if params is None:
        out = _constant(box, x.ctx)
        return _inplace(x, out) if inplace else out
    kind, p, q = params
    l, u = _tight(x)
    if kind == "clamp":
        s_l, t_l, s_u, t_u = _relax_clamp(l, u, p, q)
        lo_v, hi_v = (l.clamp(min=p, max=q), u.clamp(min=p, max=q)) if (p, q) != (None, None) else (l, u)
    elif kind == "leaky":
        s_l, t_l, s_u, t_u = _relax_leaky(l, u, p)
        lo_v, hi_v = F.leaky_relu(l, p), F.leaky_relu(u, p)
    else:
        fn, grad = (torch.sigmoid, _sigmoid_grad) if kind == "sigmoid" else (torch.tanh, _tanh_grad)
        s_l, t_l, s_u, t_u = _relax_s_shaped(l, u, fn, grad)
        lo_v, hi_v = fn(l), fn(u)
    new_box = IntervalTensor.from_bounds(lo_v, torch.maximum(hi_v, lo_v))
    if x.exact and torch.equal(s_l, s_u) and torch.equal(t_l, t_u):  # every entry stable: still exact
        out = _make(x.mA * s_l, x.mb * s_l + t_l, None, None, new_box, x.emap, x.ctx)
    else:
        lA, lb = x.lower_function()
        uA, ub = x.upper_function()
        out = _from_functions(lA * s_l, lb * s_l + t_l, uA * s_u, ub * s_u + t_u, new_box, x.emap, x.ctx)
    return _inplace(x, out) if inplace else out


# --- max pooling ---------------------------------------------------------------------------------

def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1])) if len(v) else (0, 0)
    return int(v), int(v)


@_register("max_pool2d", "_max_pool2d")
def _max_pool2d(func, args, kwargs, box):
    """DeepPoly's max-pool relaxation: below, the window entry with the largest lower bound;
    above, that entry's upper function where its lower bound dominates every other upper
    bound of the window, else the constant largest upper bound."""
    x = args[0]
    kernel = _pair(_arg(args, kwargs, 1, "kernel_size"))
    stride_arg = _arg(args, kwargs, 2, "stride", None)
    stride = kernel if stride_arg is None or (isinstance(stride_arg, (list, tuple)) and not stride_arg) \
        else _pair(stride_arg)
    padding = _pair(_arg(args, kwargs, 3, "padding", 0))
    dilation = _pair(_arg(args, kwargs, 4, "dilation", 1))
    ceil_mode = bool(_arg(args, kwargs, 5, "ceil_mode", False))
    if ceil_mode or x.center.dim() != 4 or not _rows(x):
        return _constant(box, x.ctx)
    l, u = _tight(x)
    n0, C, H, W = l.shape
    Ho, Wo = box.center.shape[-2:]
    pad = (padding[1], padding[1], padding[0], padding[0])
    unfold = {"kernel_size": kernel, "dilation": dilation, "stride": stride}
    k = kernel[0] * kernel[1]

    def windows(t: torch.Tensor, fill: float) -> torch.Tensor:  # (n, c, k, L)
        return F.unfold(F.pad(t, pad, value=fill), **unfold).view(t.shape[0], t.shape[1], k, -1)

    lw, uw = windows(l, -math.inf), windows(u, -math.inf)
    best_l, pick = lw.max(2, keepdim=True)
    best_u = uw.max(2).values.view(n0, C, Ho, Wo)
    others = uw.scatter(2, pick, -math.inf).max(2).values
    dominant = (best_l.squeeze(2) >= others).view(n0, C, Ho, Wo)
    positions = torch.arange(H * W, dtype=l.dtype, device=l.device).view(1, 1, H, W)
    where = windows(positions, -1.0).expand(n0, C, -1, -1).gather(2, pick).squeeze(2).round().long()
    D = x.ctx.dim

    def take_coef(A: torch.Tensor) -> torch.Tensor:
        index = where.unsqueeze(0).expand(D, -1, -1, -1)
        return A.reshape(D, n0, C, H * W).gather(3, index).view(D, n0, C, Ho, Wo)

    def take_val(b: torch.Tensor) -> torch.Tensor:
        return b.reshape(n0, C, H * W).gather(2, where).view(n0, C, Ho, Wo)

    lA, lb = x.lower_function()
    uA, ub = x.upper_function()
    lA, lb = take_coef(lA), take_val(lb)
    uA, ub = (lA, lb) if x.exact else (take_coef(uA), take_val(ub))
    uA = uA * dominant.to(l.dtype)
    ub = torch.where(dominant, ub, best_u)
    new_box = IntervalTensor.from_bounds(best_l.view(n0, C, Ho, Wo), best_u)
    return _from_functions(lA, lb, uA, ub, new_box, x.emap, x.ctx)


# --- dropout -------------------------------------------------------------------------------------

def _dropout(func, args, kwargs):
    x = args[0]
    mask = _ibp._dropout_mask(func, args, kwargs, "linear")
    return x if mask is None else _scale(x, mask, None, IntervalTensor(x.center * mask, x.radius * mask))


for _name in _ibp._DROPOUTS:
    _OWN[_name] = _dropout


# --- public API ----------------------------------------------------------------------------------

def _input(x: torch.Tensor, eps: float, norm: str) -> LinearBoundTensor:
    """The model input as itself: identity coefficients over the perturbation set of each example."""
    box = _ibp.input_box(x, eps, norm)
    N, D = x.shape[0], x[0].numel()
    ctx = _InputSet(center_t=box.center.reshape(N, D).t(), radius_t=box.radius.reshape(N, D).t(),
                    point_t=x.reshape(N, D).t(), norm=norm, eps=float(eps))
    eye = torch.eye(D, dtype=x.dtype, device=x.device).view(D, 1, *x.shape[1:]).expand(D, *x.shape)
    emap = torch.arange(N, device=x.device).view(N, *([1] * (x.dim() - 1)))
    return LinearBoundTensor(eye, torch.zeros_like(x), None, None, box.center, box.radius, emap, ctx)


def _forward(model: nn.Module, x: torch.Tensor, eps: float, norm: str) -> LinearBoundTensor:
    return _ibp._bound_output(model(_input(x, eps, norm)), LinearBoundTensor)


def _chunk(model: nn.Module, x: torch.Tensor) -> int:
    if model.training:  # batch statistics of batch norm must see the whole batch
        return max(1, len(x))
    return max(1, CHUNK_ELEMENTS // max(1, x[0].numel()))


def linear_bounds(
    model: nn.Module, x: torch.Tensor, eps: float, norm: str = "linf"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of ``model``'s outputs over the ``eps``-ball around ``x``, from linear
    bounds (each never looser than the interval bound of the same output)."""
    _ibp._check_norm(norm)
    lows, highs = [], []
    step = _chunk(model, x)
    for start in range(0, len(x), step):
        lo, hi = _tight(_forward(model, x[start:start + step], eps, norm))
        lows.append(lo)
        highs.append(hi)
    return torch.cat(lows), torch.cat(highs)


def _example_rows(emap: torch.Tensor, n: int) -> bool:
    """Whether row ``i`` of a 2-D value belongs to example ``i`` (constant rows aside)."""
    e = _compress(emap)
    if any(s != 1 for s in e.shape[1:]):
        return False
    rows = e.reshape(-1)
    if rows.numel() == 1:
        return int(rows[0]) < 0 or n == 1
    return bool(((rows == torch.arange(n, device=rows.device)) | (rows < 0)).all())


def _margin_chunk(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``(N, K)`` margin lower bounds of one chunk (the ``y`` column is meaningless here)."""
    with _record_linear() as slot:
        out = _forward(model, x, eps, norm)
    N = len(x)
    if out.center.dim() != 2 or out.center.shape[0] != N:
        raise TypeError(f"the model's output has shape {tuple(out.center.shape)}; margins need (batch, classes)")
    rows = torch.arange(N, device=y.device).view(N, 1)
    rec = slot[0]
    if rec is not None and rec.is_output(out):
        mA, mb, gA, gb, c, r, emap = rec.feats
        if c.dim() == 2 and c.shape[0] == N and _example_rows(emap, N):
            # last-layer elision on the linear functions: W_y - W_j applied to the features' bounds
            weight, bias = rec.weight, rec.bias
            diff = weight[y].unsqueeze(1) - weight.unsqueeze(0)  # (N, K, F)
            A = torch.einsum("nkf,dnf->dnk", diff, mA)
            b = torch.einsum("nkf,nf->nk", diff, mb)
            if gA is not None:
                A = A - torch.einsum("nkf,dnf->dnk", diff.abs(), gA)
                b = b - torch.einsum("nkf,nf->nk", diff.abs(), gb)
            boxed = torch.einsum("nkf,nf->nk", diff, c) - torch.einsum("nkf,nf->nk", diff.abs(), r)
            if bias is not None:
                shift = bias[y].unsqueeze(1) - bias.unsqueeze(0)
                b, boxed = b + shift, boxed + shift
            return torch.maximum(_extreme(A, b, rows, out.ctx, lower=True), boxed)
    boxed = out.lower.gather(1, y[:, None]) - out.upper
    if not _example_rows(out.emap, N):
        return boxed
    lA, lb = out.lower_function()
    uA, ub = out.upper_function()
    A = lA.gather(2, y.view(1, N, 1).expand(out.ctx.dim, N, 1)) - uA
    b = lb.gather(1, y[:, None]) - ub
    return torch.maximum(_extreme(A, b, rows, out.ctx, lower=True), boxed)


def linear_margin_lower_bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                              norm: str = "linf") -> torch.Tensor:
    """Lower bounds of ``logit_y - logit_j`` over the ``eps``-ball from linear bounds, shape ``(N, K)``;
    entry ``[n, y_n]`` is ``+inf``. See :func:`~.bounds.margin_lower_bound` (``method="crown"``)."""
    _ibp._check_norm(norm)
    y = y.to(x.device).long()
    step = _chunk(model, x)
    lb = torch.cat([_margin_chunk(model, x[s:s + step], y[s:s + step], eps, norm) for s in range(0, len(x), step)])
    return lb.masked_fill(F.one_hot(y, lb.shape[1]).bool(), float("inf"))
