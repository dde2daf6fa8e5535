"""Figures of a benchmark run as inline SVG (matplotlib, Agg backend).

``figure_svg(json_path)`` returns an ``<svg>`` element (no XML prolog) that an
HTML report can paste as is: step time against N, log-log, one panel per
implementation, one solid line per device and its bandwidth floor dashed in
the same colour.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .analysis import BenchData, load


def series_choice(data: BenchData, dtype: str | None = None, d: int | None = None, k: int | None = None) -> tuple[str, int, int]:
    """The (dtype, D, K) to plot: the given ones, else float32 (or the first dtype) and the
    (D, K) with the most N values (ties: the largest D*K).

    Raises:
        ValueError: if the data has no step timings (or none of that dtype).
    """
    steps = [s for s in data.steps if dtype is None or s.dtype == dtype]
    if not steps:
        raise ValueError(f"{data.path}: no step timings{'' if dtype is None else f' in {dtype}'} to plot")
    dtypes = sorted({s.dtype for s in steps})
    dt = dtype or ("float32" if "float32" in dtypes else dtypes[0])
    counts: dict[tuple[int, int], int] = {}
    for s in steps:
        if s.dtype == dt and (d is None or s.d == d) and (k is None or s.k == k):
            counts[(s.d, s.k)] = counts.get((s.d, s.k), 0) + 1
    if not counts:
        raise ValueError(f"{data.path}: no step timings for dtype={dt} D={d} K={k}")
    dd, kk = max(counts, key=lambda dk: (counts[dk], dk[0] * dk[1]))
    return dt, dd, kk


def figure_svg(json_path: str | Path | BenchData, *, dtype: str | None = None, d: int | None = None, k: int | None = None) -> str:
    """Time per step against N (log-log): one panel per implementation, one line per device,
    the device's bandwidth floor dashed.

    Args:
        json_path: a pytest-benchmark JSON file from ``python -m harness bench`` (or its loaded data).
        dtype, d, k: the series to plot (default: see :func:`series_choice`).

    Returns:
        the figure as an ``<svg ...>...</svg>`` string, without XML prolog, ready to inline in HTML.

    Raises:
        ValueError: if there is nothing to plot.
    """
    data = json_path if isinstance(json_path, BenchData) else load(json_path)
    buf = io.StringIO()
    save_figure(data, buf, "svg", dtype=dtype, d=d, k=k)
    text = buf.getvalue()
    start = text.find("<svg")
    return text[start:] if start >= 0 else text


def save_figure(data: BenchData, target: Any, fmt: str, *, dtype: str | None = None, d: int | None = None, k: int | None = None) -> None:
    """Draw the figure of :func:`figure_svg` and save it to ``target`` (a path or file object) as ``fmt`` (svg, png, pdf)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    dt, dd, kk = series_choice(data, dtype, d, k)
    steps = [s for s in data.steps if (s.dtype, s.d, s.k) == (dt, dd, kk)]
    impls = list(dict.fromkeys(s.implementation for s in steps))
    devices = sorted({s.device for s in steps}, key=lambda x: (x != "cpu", x))
    colours = {dev: f"C{i}" for i, dev in enumerate(devices)}
    with plt.rc_context({"svg.hashsalt": "harness-bench", "svg.fonttype": "none"}):
        fig, axes = plt.subplots(1, len(impls), figsize=(4.2 * len(impls) + 0.6, 3.6), squeeze=False, sharey=True)
        for ax, impl in zip(axes[0], impls, strict=True):
            for dev in devices:
                pts = sorted((s.n, s.seconds, s.floor) for s in steps if s.implementation == impl and s.device == dev)
                if not pts:
                    continue
                ns = [p[0] for p in pts]
                ax.plot(ns, [p[1] for p in pts], marker="o", ms=3, color=colours[dev], label=f"{dev} step")
                floors = [(p[0], p[2]) for p in pts if p[2]]
                if floors:
                    ax.plot([f[0] for f in floors], [f[1] for f in floors], ls="--", color=colours[dev], alpha=0.7,
                            label=f"{dev} bandwidth floor")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(impl, fontsize=10)
            ax.set_xlabel("N (rows of X)")
            ax.grid(True, which="major", alpha=0.3)
        axes[0][0].set_ylabel(f"seconds per step ({data.stat})")
        axes[0][-1].legend(fontsize=7, loc="upper left")
        fig.suptitle(f"update step, {dt}, D={dd}, K={kk}", fontsize=11)
        fig.tight_layout()
        fig.savefig(target, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
        plt.close(fig)
