"""The report's figures: matplotlib (Agg backend) rendered to inline SVG strings.

Three views of the records:

- :func:`bits_of_error_plot`: distribution of bits of error
  (``log2(1 + ulp_error)``) per implementation and dtype (box plots, whiskers
  at the minimum and maximum).
- :func:`bound_tightness_plot`: distribution of ``bound_ratio`` (worst
  absolute error / rigorous forward error bound) per dtype, on a log10 axis;
  1 is the bound itself, so the distance to 1 shows how tight the bound is.
- :func:`drift_plot`: trajectory drift of W and b from the exact trajectory
  (``drift_ulp_error``, ULPs of the dtype) per SGD step, worst over the
  cases run for two steps or more.

Each returns an SVG fragment (``<svg ...>...</svg>``, no XML prolog) ready to
embed in HTML, or ``None`` when the records hold nothing to plot. Text stays
text (``svg.fonttype = "none"``), so the figures are small and searchable;
matplotlib escapes it as XML.
"""

from __future__ import annotations

import io
import math
import re
from collections import defaultdict
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: render to files only (must precede pyplot)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, SymmetricalLogLocator  # noqa: E402

from ..records import Record  # noqa: E402

#: At most this many lines in the drift plot (the ones that drift most).
MAX_DRIFT_LINES = 12
#: At most this many boxes in the bits-of-error plot (the worst ones).
MAX_BOXES = 40

_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)


def _plain_log_ticks(axis: matplotlib.axis.Axis) -> None:
    """Label a log or symlog axis ``1, 10, 100, 1e+04`` in plain text: the default ``10^n`` labels go
    through mathtext, whose parser costs about half a second to set up on every report."""
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _label(s: str) -> str:
    """Data text for matplotlib: ``$`` escaped so it is never parsed as mathtext."""
    return s.replace("\\", "\\\\").replace("$", r"\$")


def _to_svg(fig: plt.Figure, salt: str, title: str) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = _PROLOG.sub("", buf.getvalue(), count=1)
    aria = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return svg.replace("<svg ", f'<svg role="img" aria-label="{aria}" class="plot" ', 1)


def bits_of_error_plot(records: Sequence[Record]) -> str | None:
    """Box plot of bits of error per implementation and dtype (None if no record has bits)."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        b = r.bits_of_error
        if isinstance(b, (int, float)) and math.isfinite(b):
            groups[(r.implementation, r.dtype)].append(float(b))
    if not groups:
        return None
    keys = sorted(groups, key=lambda k: (k[1], k[0]))
    dropped = 0
    if len(keys) > MAX_BOXES:
        keys = sorted(keys, key=lambda k: -max(groups[k]))[:MAX_BOXES]
        dropped = len(groups) - MAX_BOXES
        keys.sort(key=lambda k: (k[1], k[0]))
    data = [np.asarray(groups[k]) for k in keys]
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * len(keys)))
    ax.boxplot(data, orientation="horizontal", whis=(0, 100), widths=0.6, showfliers=False,
               medianprops={"color": "#1f5fa8"})
    ax.set_yticks(range(1, len(keys) + 1), [_label(f"{impl}  {dt}  (n={len(groups[(impl, dt)])})") for impl, dt in keys])
    ax.invert_yaxis()
    ax.set_xlabel("bits of error = log2(1 + ULP error)")
    ax.grid(axis="x", alpha=0.3)
    title = "Bits of error per implementation and dtype"
    if dropped:
        title += f" ({dropped} more pairs not shown)"
    ax.set_title(_label(title), fontsize=10)
    return _to_svg(fig, "bits", title)


def bound_tightness_plot(records: Sequence[Record]) -> str | None:
    """Histogram of log10(bound_ratio) per dtype (None if no record has a positive finite ratio)."""
    groups: dict[str, list[float]] = defaultdict(list)
    zeros: dict[str, int] = defaultdict(int)
    for r in records:
        q = r.bound_ratio
        if isinstance(q, (int, float)) and math.isfinite(q):
            if q > 0:
                groups[r.dtype].append(math.log10(q))
            else:
                zeros[r.dtype] += 1
    if not groups:
        return None
    allv = np.concatenate([np.asarray(v) for v in groups.values()])
    lo, hi = math.floor(min(allv.min(), -1.0)), math.ceil(max(allv.max(), 0.5))
    bins = np.linspace(lo, hi, max(10, min(80, 4 * (hi - lo))) + 1).tolist()
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    for dt in sorted(groups):
        ax.hist(np.asarray(groups[dt]), bins=bins, histtype="step", linewidth=1.5,
                label=_label(f"{dt} (n={len(groups[dt])}, {zeros[dt]} exact)"))
    ax.axvline(0.0, color="#b3261e", linestyle="--", linewidth=1.2)
    ax.text(0.02, 0.97, "rigorous bound", color="#b3261e", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    ax.set_xlabel("log10(worst error / rigorous bound): below 0 is inside the bound")
    ax.set_ylabel("records")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    title = "Error against the rigorous bound (how tight the bounds are)"
    ax.set_title(title, fontsize=10)
    return _to_svg(fig, "bound", title)


def drift_plot(records: Sequence[Record]) -> str | None:
    """Worst trajectory drift (ULPs) of W and b per step, one line per implementation, device and dtype.

    Only runs of two steps or more count (a single step's drift is its own error). None if there is none.
    """
    # only runs of several steps: after a single step the drift is that step's error (plotted above)
    steps: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for r in records:
        key = (r.case, r.implementation, r.device, r.dtype)
        steps[key] = max(steps[key], r.step)
    per: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for r in records:
        if r.quantity not in ("W", "b") or steps[(r.case, r.implementation, r.device, r.dtype)] < 2:
            continue
        d = r.drift_ulp_error
        if not (isinstance(d, (int, float)) and math.isfinite(d)):
            continue
        line = per[(r.implementation, r.device, r.dtype)]
        line[r.step] = max(line.get(r.step, 0.0), float(d))
    if not per:
        return None
    keys = sorted(per, key=lambda k: -max(per[k].values()))[:MAX_DRIFT_LINES]
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for impl, dev, dt in sorted(keys, key=lambda k: (k[2], k[0], k[1])):
        pts = sorted(per[(impl, dev, dt)].items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=_label(f"{impl} {dev} {dt}"))
    ax.set_xlabel("SGD step")
    ax.set_ylabel("drift (ULPs, worst over cases)")
    if max(max(v.values()) for v in per.values()) > 10:
        ax.set_yscale("symlog", linthresh=1.0)  # linear below 1 ULP, logarithmic above
        ylocator = SymmetricalLogLocator(base=10, linthresh=1.0, subs=[1.0])
        ylocator.set_params(numticks=8)
        ax.yaxis.set_major_locator(ylocator)
        _plain_log_ticks(ax.yaxis)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    title = "Trajectory drift of W and b per step"
    if len(per) > len(keys):
        title += f" ({len(per) - len(keys)} flatter lines not shown)"
    ax.set_title(title, fontsize=10)
    return _to_svg(fig, "drift", title)
