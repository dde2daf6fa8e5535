"""Whether a framework flushes subnormal numbers to zero in a half-precision dtype on a device: a probe.

The bounds let float16 and bfloat16 products and sums flush subnormals to zero without a declaration
(:func:`harness.bounds.flush_to_zero_default`): oneDNN's bfloat16 matrix product on CPUs does, and a correct step
must not be called wrong for it. That allowance is an absolute error of up to the dtype's smallest normal number per
operation (``2**-14`` in float16), which hides every error in values near it: a float16 gradient of ``-3.8e-5``
returned as ``+3.8e-5`` agreed at 0.04 of its bound, as did a tanh network whose hidden unit's gradient had its sign
flipped or was doubled (helper-65, issue 12's eighteenth round). PyTorch's float16 on this CPU, and NumPy's float16,
do not flush. So the allowance is kept where a probe of the step's framework, in its dtype on its device, finds a
flush (:func:`flushes_subnormals`), or where the probe cannot run; a framework bug is probed for, never assumed.

The probe (exact values: powers of two, and their sums, every one a float of the dtype, so that every correct
evaluation that does not flush returns them exactly): matrix products (the shapes of :data:`PROBE_SHAPES`: the
kernels differ by size and shape) whose every product is subnormal (``2**(emin - 3)``) and whose sums are subnormal
(one term) or normal; the same products element-wise; a subnormal input times a power of two that makes it normal
(an input read as zero, DAZ); a difference of two normal numbers that is subnormal; the sum of a column of subnormal
values. Any result other than the exact value counts as a flush.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ..floats import get_format
from .dispatch import to_float64, to_framework

#: The shapes ``(m, k, n)`` of the probe's matrix products ``(m, k) @ (k, n)``: square ones, and a step's own shapes
#: (``X W`` and ``X^T R`` of N = 256 rows, D = 16, K = 4): libraries choose their kernels by size and shape.
PROBE_SHAPES = ((1, 1, 1), (2, 2, 2), (16, 16, 16), (64, 64, 64), (256, 16, 4), (16, 256, 4))


@functools.cache
def flushes_subnormals(framework: str, device: str, dtype: str) -> bool | None:
    """Whether ``framework`` flushed a subnormal input, product, sum or difference to zero in ``dtype`` on ``device``
    (module docstring): True where some probe returned other than the exact value, False where none did, None where
    the probe could not run (an operation the framework's objects lack, a device that failed). Cached per
    ``(framework, device, dtype)``; meant for float16 and bfloat16 (float32 and float64 are graded with gradual
    underflow unless a step declares flush-to-zero)."""
    fmt = get_format(dtype)
    e = fmt.emin
    e_a = (e - 3) // 2
    e_b = e - 3 - e_a  # 2**e_a * 2**e_b = 2**(e - 3): subnormal, a float of the dtype (p >= 8 > 3)

    def make(values: np.ndarray) -> Any:
        return to_framework(np.asarray(values, dtype=np.float64), framework, dtype, device)

    def exact(obj: Any, want: np.ndarray) -> bool:
        got = to_float64(obj, framework)
        return got.shape == want.shape and bool(np.array_equal(got, want))

    try:
        with np.errstate(all="ignore"):
            for m, k, n in PROBE_SHAPES:
                a = np.full((m, k), math.ldexp(1.0, e_a))
                b = np.full((k, n), math.ldexp(1.0, e_b))
                if not exact(make(a) @ make(b), np.full((m, n), k * math.ldexp(1.0, e - 3))):
                    return True
                if not exact(make(a) * make(np.full((m, k), math.ldexp(1.0, e_b))), np.full((m, k), math.ldexp(1.0, e - 3))):
                    return True
                tiny = np.full((m, k), math.ldexp(1.0, e - 2))  # subnormal inputs, each times 16 once
                scale = np.zeros((k, n))
                scale[0, :] = 16.0
                if not exact(make(tiny) @ make(scale), np.full((m, n), math.ldexp(1.0, e + 2))):
                    return True
            c, d = np.array([1.5 * math.ldexp(1.0, e)]), np.array([math.ldexp(1.0, e)])
            if not exact(make(c) - make(d), np.array([math.ldexp(1.0, e - 1)])):
                return True
            col = make(np.full(8, math.ldexp(1.0, e - 5)))
            if hasattr(col, "sum") and not exact(col.sum(), np.array(math.ldexp(1.0, e - 2))):
                return True
    except Exception:  # noqa: BLE001 - a framework's objects without these operations: unknown, the allowance stays
        return None
    return False
