"""Input checks shared by every public entry point.

Each check raises a ``TypeError`` or ``ValueError`` whose message names the offending argument and
the expected shape, so that a bad call fails at the boundary instead of deep inside an index op.

One boundary: a public entry point (a module's ``forward``, a public function) checks each of its
tensors once and hands them, trusted, to an internal function (``_forward``, ``_step``, ...); the
library's own callers that hold checked tensors call the internal function, so no tensor is
checked twice in one call and no switch turns the checks off.

Checks that read tensor values (finiteness, index ranges) are skipped under ``torch.compile``
(a data-dependent branch would break the graph). Everywhere else they run, in one of two ways
(docs/guide.md, "Input checks"):

* ``sync=True`` (the losses and the data boundary: once per training step): the values are read
  on the host and a bad one is a ``ValueError`` naming it, at the call that passed it.
* ``sync=False`` (the layers, called many times per step): on the CPU the same ``ValueError``
  (reading a CPU tensor costs no synchronisation); on an accelerator a device-side assert
  (``torch._assert_async``), so that a layer never stalls the host to wait for the device. A bad
  value then fails at the next synchronisation, as a device error.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor
from torch.compiler import is_compiling

__all__ = [
    "check_features",
    "check_feature_dim",
    "check_index_vector",
    "check_labels",
    "check_edge_index",
    "check_positive",
    "check_nonnegative",
    "check_positive_int",
    "check_rate",
    "check_choice",
    "check_edge_values",
    "check_affinity_edges",
    "check_device",
    "device_mismatch",
    "check_device_arg",
    "unit_rows",
    "require",
]


def value_checks_skipped() -> bool:
    """Whether value checks (finite, in range) are off: only while ``torch.compile`` traces (a
    data-dependent check would break the graph)."""
    return is_compiling()


def has_values(x: Tensor) -> bool:
    """Whether ``x`` holds data that a value check can read: a ``meta`` tensor has only a shape
    (reading it fails inside ``.item()``), so its value checks are skipped and its device is what
    :func:`check_device` compares."""
    return x.device.type != "meta"


def device_side(reference: Tensor, sync: bool) -> bool:
    """Whether a value check on ``reference``'s device is a device-side assert: ``sync=False``
    (a layer) on an accelerator. A CPU tensor is read directly: no device to wait for."""
    return not sync and reference.device.type != "cpu"


def require(ok: Tensor, message: str, detail: Callable[[], str] | None = None, *,
            sync: bool = True) -> None:
    """Raise ``ValueError(message + detail())`` unless the one-element bool tensor ``ok`` holds.
    Under :func:`device_side` it is ``torch._assert_async(ok, message)`` instead: no host sync,
    and ``detail`` (which reads values) is never called. A ``meta`` ``ok`` (computed from a
    tensor without data) holds nothing to check."""
    if not has_values(ok):
        return
    if device_side(ok, sync):
        torch._assert_async(ok, message)
    elif not bool(ok):
        raise ValueError(message + (detail() if detail is not None else ""))


def check_device(x: Tensor, name: str, device: torch.device | None, ref: str = "x", *,
                 move: bool = False) -> Tensor:
    """``x`` must be on ``device``, the device of the argument ``ref``: otherwise a ``ValueError``
    names both arguments and both devices (instead of a failure deep inside an index op or a
    ``.item()``). With ``move`` (small index tensors the library has always moved for the user)
    a tensor with values is moved there instead; a ``meta`` tensor never is (it has no data).
    The one device check of the library: run before any value check (a value check on a tensor
    of another device would fail inside torch)."""
    if device is None or x.device == device:
        return x
    if move and has_values(x) and device.type != "meta":
        return x.to(device)
    raise device_mismatch(name, x.device, ref, device)


def device_mismatch(name: str, found: torch.device, ref: str, device: torch.device) -> ValueError:
    """The error of :func:`check_device`, for inputs that are not a ``Tensor`` (a
    ``SparseTensor``'s ``device`` is a method)."""
    return ValueError(f"'{name}' is on device {found} but '{ref}' is on device {device}: "
                      f"move both to the same device")


def check_device_arg(device: object, name: str = "device") -> torch.device | None:
    """``None``, a ``torch.device`` or a string torch accepts as one (``'tpu'`` is not)."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device, int)) or isinstance(device, bool):
        raise TypeError(f"'{name}' must be a torch.device or a device string, "
                        f"got {type(device).__name__}")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"'{name}' is not a device torch knows: {device!r} ({error})") from None


def unit_rows(x: Tensor) -> Tensor:
    """Each row of ``x`` divided by its Euclidean norm, without the scale limits of
    ``F.normalize`` (whose ``eps=1e-12`` flattens rows of norm below 1e-12, and whose squared
    norm overflows to ``inf`` for entries above ~1e154 in float64, ~1e19 in float32): the row is
    first divided by its largest absolute entry, so the norm is taken of numbers in ``[-1, 1]``.
    The result depends only on the row's direction (cosine similarities are scale-free). Rows of
    zeros stay zero. Differentiable; reads no value (no synchronisation)."""
    peak = x.detach().abs().amax(dim=-1, keepdim=True)
    # A zero row stays zero (divided by one); subnormal peaks are fine (1/peak is finite).
    scaled = x / torch.where(peak > 0, peak, torch.ones_like(peak))
    return scaled / torch.linalg.vector_norm(scaled, dim=-1, keepdim=True).clamp_min(
        torch.finfo(x.dtype).tiny)


def check_product_range(x: Tensor, name: str) -> Tensor:
    """The inner products and squared distances of ``x``'s rows must be finite in its dtype:
    a ``ValueError`` names ``x`` when its largest entry ``m`` has ``4 d m^2`` above the dtype's
    maximum (scores would be ``inf``; faiss's clustering aborts the process on them). Read on the
    host (the kNN search is a data boundary, once per graph or bank)."""
    if x.numel() == 0 or value_checks_skipped() or not has_values(x):
        return x
    peak = float(x.detach().abs().max())
    limit = math.sqrt(torch.finfo(x.dtype).max / (4 * x.size(-1)))
    if peak > limit:
        raise ValueError(f"'{name}' has entries up to {peak:.3g}: its inner products or squared "
                         f"distances overflow {x.dtype} (entries must stay below {limit:.3g}); "
                         f"rescale it, or use metric='cos'")
    return x


def check_features(x: object, name: str = "x", *, finite: bool = True,
                   sync: bool = True) -> Tensor:
    """``x`` must be a non-empty floating-point tensor of shape ``[num_nodes, num_features]``
    (finite unless ``finite=False``; ``sync``: see :func:`require`)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor of shape [num_nodes, num_features], "
                        f"got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"'{name}' must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"'{name}' must have shape [num_nodes, num_features] (2 dimensions), "
                         f"got {x.dim()} dimensions with shape {tuple(x.shape)}")
    if x.size(0) == 0 or x.size(1) == 0:
        raise ValueError(f"'{name}' is empty (shape {tuple(x.shape)}): an empty batch has no "
                         f"contrastive update")
    if finite:
        require_finite(x, name, sync=sync)
    return x


def check_feature_dim(x: Tensor, name: str, dim: int, rows: str, what: str) -> Tensor:
    """``x`` (checked by :func:`check_features`) must have ``dim`` columns, those of ``what``;
    ``rows`` names its first dimension in the message."""
    if x.size(1) != dim:
        raise ValueError(f"'{name}' must have shape [{rows}, {dim}] ({what}), "
                         f"got {tuple(x.shape)}")
    return x


def require_finite(x: Tensor, name: str, *, sync: bool = True) -> None:
    """``x`` (strided) holds no NaN or Inf, by :func:`require`. On the host a sum decides first: it
    is finite only if every value is (NaN and Inf propagate through it; 4x faster than the
    min/max below at 2,708 x 64), and only a non-finite sum, which a finite overflow can also
    give, pays for the exact :func:`all_finite`."""
    if value_checks_skipped():
        return
    message = f"'{name}' contains non-finite values (NaN or Inf)"
    x = _stored_values(x)
    if x.numel() == 0 or not has_values(x):
        return
    x = x.detach()
    if device_side(x, sync):  # exact: a false assert (a finite overflow) would end the process
        require(_finite_extremes(x), message, sync=sync)
    elif not math.isfinite(x.sum().item()) and not all_finite(x):
        raise ValueError(message)


def _stored_values(x: Tensor) -> Tensor:
    """The values a sparse tensor stores (its implicit zeros are finite), or ``x`` itself."""
    if x.layout == torch.strided:
        return x
    return x.coalesce().values() if x.layout == torch.sparse_coo else x.values()


def _finite_extremes(x: Tensor) -> Tensor:
    return torch.isfinite(torch.stack(torch.aminmax(x))).all()


def all_finite(x: Tensor) -> bool:
    """Whether ``x`` holds no NaN or Inf. A min/max reduction (NaN propagates through it) reads
    ``x`` once without the boolean copy of ``isfinite(x).all()``: 7x faster at 65k x 128."""
    x = _stored_values(x)
    if x.numel() == 0 or not has_values(x):
        return True
    return bool(_finite_extremes(x))


def check_index_vector(index: object, name: str, length: int | None = None, *,
                       device: torch.device | None = None, ref: str = "x", move: bool = False,
                       sync: bool = True) -> Tensor:
    """``index`` must be an integer tensor of shape ``[length]`` with non-negative entries (on
    ``device``, that of the argument ``ref``, when given: see :func:`check_device`; ``sync``: see
    :func:`require`)."""
    if not isinstance(index, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor of integers, got {type(index).__name__}")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise TypeError(f"'{name}' must be an integer tensor, got dtype {index.dtype}")
    if index.dim() != 1:
        raise ValueError(f"'{name}' must be one-dimensional, got shape {tuple(index.shape)}")
    if length is not None and index.numel() != length:
        raise ValueError(f"'{name}' must have one entry per node ({length}), "
                         f"got {index.numel()} entries")
    index = check_device(index, name, device, ref, move=move)
    if index.numel() > 0 and not value_checks_skipped() and has_values(index):
        require(index.min() >= 0, f"'{name}' must be non-negative",
                lambda: f", got minimum {int(index.min())}", sync=sync)
    return index.long()


def check_labels(labels: object, num_nodes: int | None = None,
                 name: str = "labels") -> tuple[Tensor, int]:
    """Class labels: a non-empty integer vector ``[num_nodes]`` (any length for ``None``) with
    non-negative entries; returns it (as ``long``) and the number of classes ``labels.max() + 1``."""
    labels = check_index_vector(labels, name, length=num_nodes)
    if labels.numel() == 0:
        raise ValueError(f"'{name}' is empty: one class label per node is needed")
    return labels, int(labels.max()) + 1


#: Facts established about index tensors (in range for each set of bounds it was checked
#: against), with the tensor's state when they were read: its version counter and where its
#: values lie (storage address, offset, shape, strides). Full-graph training passes one
#: ``edge_index`` to every layer call; read once, it is not read again while unchanged: an
#: in-place write bumps the version counter (views share it), and ``.data = ...`` or ``set_``
#: moves the values, so a modified graph is read again. (Writes into the same memory that bypass
#: the counter, through ``.data[...]`` or NumPy, are not seen: a check is then skipped, which is
#: why only checks, never facts that select a computation, are remembered.) Keyed by ``id`` with a
#: weak reference (a tensor's ``==`` is elementwise, so it cannot be a dict key): a graph that is
#: freed leaves the table. Inference tensors (made under ``torch.inference_mode``) have no
#: version counter, so nothing is remembered about them: they are read at every call.
_FACTS: dict[int, tuple[weakref.ref[Tensor], tuple[Any, ...], dict[Hashable, Any]]] = {}


def _state(tensor: Tensor) -> tuple[Any, ...]:
    return (tensor._version, tensor.data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tensor.stride())


def _recall(tensor: Tensor, fact: Hashable, default: Any = None) -> Any:
    """What :func:`_remember` stored as ``fact`` about ``tensor`` in its current state, else
    ``default``."""
    entry = _FACTS.get(id(tensor))
    if entry is None or entry[0]() is not tensor or tensor.is_inference() \
            or entry[1] != _state(tensor):
        return default
    return entry[2].get(fact, default)


def _remember(tensor: Tensor, fact: Hashable, value: Any) -> None:
    """Store ``value`` as ``fact`` about ``tensor`` as it is now (see :data:`_FACTS`)."""
    if tensor.is_inference():
        return
    ident, state = id(tensor), _state(tensor)
    entry = _FACTS.get(ident)
    if entry is None or entry[0]() is not tensor or entry[1] != state:
        entry = (weakref.ref(tensor, lambda _: _FACTS.pop(ident, None)), state, {})
        _FACTS[ident] = entry
    entry[2][fact] = value


def check_edge_index(edge_index: object, num_src: int, num_dst: int,
                     name: str = "edge_index", *, device: torch.device | None = None,
                     ref: str = "x", move: bool = False, sync: bool = True) -> Tensor:
    """``edge_index`` must be an integer tensor ``[2, num_edges]`` with sources below ``num_src``
    and targets below ``num_dst`` (on ``device``, that of ``ref``, when given)."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor of shape [2, num_edges], "
                        f"got {type(edge_index).__name__}")
    if edge_index.dtype not in (torch.int64, torch.int32):  # what PyG's scatter and gathers take
        raise TypeError(f"'{name}' must be an int64 (or int32) tensor, got dtype "
                        f"{edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"'{name}' must have shape [2, num_edges], got {tuple(edge_index.shape)}")
    edge_index = check_device(edge_index, name, device, ref, move=move)
    if edge_index.numel() > 0 and not value_checks_skipped() and has_values(edge_index):
        fact = ("in range", num_src, num_dst)
        if _recall(edge_index, fact, False):
            return edge_index
        # One reduction: over the whole tensor for one node set (half the time of one per row),
        # per row for two.
        if num_src == num_dst:
            low, high = torch.aminmax(edge_index)
            ok = (low >= 0) & (high < num_src)
        else:
            low, high = torch.aminmax(edge_index, dim=1)
            ok = (low.min() >= 0) & (high[0] < num_src) & (high[1] < num_dst)

        def detail() -> str:
            src_min, dst_min, src_max, dst_max = torch.cat(
                torch.aminmax(edge_index, dim=1)).tolist()
            return (f", got sources in [{src_min}, {src_max}] and targets in "
                    f"[{dst_min}, {dst_max}]")
        require(ok, f"'{name}' is out of range: sources must lie in [0, {num_src}) and targets "
                    f"in [0, {num_dst})", detail, sync=sync)
        _remember(edge_index, fact, True)
    return edge_index


def check_edge_values(values: object, num_edges: int, name: str, *,
                      nonnegative: bool = False, device: torch.device | None = None,
                      ref: str = "x", move: bool = False, sync: bool = True) -> Tensor:
    """Per-edge values ``[num_edges]``: floating point and finite (NaN or Inf would spread through
    every sum they enter) and, with ``nonnegative`` (weights whose logarithm or square root is
    taken), at least zero. ``device``, ``ref`` and ``move`` as in :func:`check_device`."""
    if not isinstance(values, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor of shape [num_edges], "
                        f"got {type(values).__name__}")
    if not values.is_floating_point():
        raise TypeError(f"'{name}' must be a floating-point tensor, got dtype {values.dtype}")
    if values.dim() != 1 or values.numel() != num_edges:
        raise ValueError(f"'{name}' must have shape [num_edges] = [{num_edges}], "
                         f"got {tuple(values.shape)}")
    values = check_device(values, name, device, ref, move=move)
    return check_weight_values(values, name, nonnegative=nonnegative, sync=sync)


def check_affinity_edges(edge_index: object, edge_weight: object, num_nodes: int,
                         names: tuple[str, str], *, device: torch.device, ref: str,
                         move: bool = False) -> tuple[Tensor, Tensor | None]:
    """An affinity graph a caller passes to a loss, over its ``num_nodes`` nodes: the
    ``edge_index`` and, unless ``None``, non-negative weights (they enter a logarithm), called
    ``names`` (index, weight) in the messages, on ``device`` (moved there with ``move``)."""
    index = check_edge_index(edge_index, num_nodes, num_nodes, names[0], device=device, ref=ref,
                             move=move)
    if edge_weight is None:
        return index, None
    return index, check_edge_values(edge_weight, index.size(1), names[1], nonnegative=True,
                                    device=device, ref=ref, move=move)


def check_weight_values(values: Tensor, name: str, *, nonnegative: bool = False,
                        sync: bool = True) -> Tensor:
    """The values of floating-point weights: finite and, with ``nonnegative``, at least zero."""
    require_finite(values, name, sync=sync)
    if nonnegative and values.numel() > 0 and not value_checks_skipped() and has_values(values):
        lowest = values.detach().min()
        require(lowest >= 0, f"'{name}' must be non-negative (weights)",
                lambda: f", got minimum {float(lowest)}", sync=sync)
    return values


def check_float_dtype(dtype: object, name: str = "dtype") -> torch.dtype | None:
    """``None`` or a floating-point ``torch.dtype`` (an integer or bool dtype would truncate or
    round the values stored in it)."""
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"'{name}' must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def check_positive(value: float, name: str) -> float:
    """``value`` must be a finite real number greater than zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"'{name}' must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"'{name}' must be a finite number > 0, got {value}")
    return float(value)


def check_nonnegative(value: float, name: str) -> float:
    """``value`` must be a finite real number greater than or equal to zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"'{name}' must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"'{name}' must be a finite number >= 0, got {value}")
    return float(value)


def check_positive_int(value: object, name: str) -> int:
    """``value`` must be an int (not a bool) of at least one: a ``TypeError`` names the argument
    for any other type, a ``ValueError`` for an int below one."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'{name}' must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"'{name}' must be a positive int, got {value!r}")
    return value


def check_nonnegative_int(value: object, name: str) -> int:
    """``value`` must be an int (not a bool) of at least zero (an epoch, a seed)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'{name}' must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"'{name}' must be a non-negative int, got {value!r}")
    return value


def check_generator(generator: object) -> None:
    """``generator`` must be ``None`` or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"'generator' must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")


def check_rate(value: object, name: str) -> float:
    """``value`` must be a real number in ``[0, 1)`` (a dropout or drop rate)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"'{name}' must be a number in [0, 1), got {type(value).__name__}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"'{name}' must lie in [0, 1), got {value}")
    return float(value)


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"'{name}' must be one of {choices}, got {value!r}")
    return choices[choices.index(value)]  # the choice itself: a str
