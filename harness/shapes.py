"""The one rule for the shapes of a linear step's arrays, for the functions that take them as arrays.

The compiled kernels of the exact oracle (:mod:`harness.fastexact`) and of the error bounds
(:mod:`harness.bounds`, :mod:`harness.partialsums`) index each array by the shapes of the others and
check no bounds: an array whose size happens to match would be read as another shape (a wrong value),
and one that NumPy broadcasts would be read past its end (a crash). Cases are checked when they are
built (:mod:`harness.cases`, which names the file, case and key); this check guards the public
functions that take arrays directly.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def check_step_shapes(X: npt.ArrayLike, y: npt.ArrayLike, W: npt.ArrayLike, b: npt.ArrayLike,
                      residual: npt.ArrayLike | None = None) -> tuple[int, int, int]:
    """``(N, D, K)`` when ``X`` is ``(N, D)``, ``W`` ``(D, K)``, ``y`` (and ``residual``, if given) ``(N, K)`` and ``b``
    holds ``K`` values (``(K,)``, or ``(K, 1)``, ``(1, K)``: read as ``(K,)``).

    Raises:
        ValueError: naming the first array whose shape does not agree, with the shape expected.
    """
    shapes = {name: np.shape(a) for name, a in (("X", X), ("y", y), ("W", W), ("b", b))}
    for name in ("X", "y", "W"):
        if len(shapes[name]) != 2:
            raise ValueError(f"{name} must be 2-D, got shape {shapes[name]}")
    (n, d), (d_w, k) = shapes["X"], shapes["W"]
    if d_w != d:
        raise ValueError(f"W has shape {shapes['W']}: it needs D = {d} rows, as X {shapes['X']} has columns")
    if shapes["y"] != (n, k):
        raise ValueError(f"y has shape {shapes['y']}: expected (N, K) = {(n, k)} from X {shapes['X']} and W {shapes['W']}")
    if math.prod(shapes["b"]) != k or len(shapes["b"]) > 2:
        raise ValueError(f"b has shape {shapes['b']}: expected K = {k} values")
    if residual is not None and np.shape(residual) != (n, k):
        raise ValueError(f"the residual has shape {np.shape(residual)}: expected (N, K) = {(n, k)}")
    return n, d, k


def same_up_to_size1(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """Whether an array of shape ``got`` may be read as one of shape ``want``: the same shape, size-1 axes aside
    (a ``(K,)`` value returned as ``(1, K)`` or ``(K, 1)``, a size-1 one as 0-d). A transposed or flattened array has
    the right size only: reshaping it would grade its elements against the wrong ones. The one rule for a step's
    returned quantities (:func:`harness.results.read_quantity`) and optimizer states (:func:`harness.optim.grade.read_state`)."""
    return got == want or tuple(x for x in got if x != 1) == tuple(x for x in want if x != 1)
