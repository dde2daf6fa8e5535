"""Benchmarks of the update step: timing core, bandwidth floor, CPU/GPU tables, SVG figures.

- :mod:`.timing`: what is timed (step, bandwidth probe, verification) and how
  (device synchronization, warm-up, pinned threads). No pytest.
- :mod:`.analysis`: tables from pytest-benchmark JSON (floor ratio, regime, crossover).
- :mod:`.figure`: :func:`figure_svg`, inline SVG for the HTML report.
- :mod:`.run`: the ``python -m harness bench`` subcommand.

The pytest-benchmark layer is ``benchmarks/`` at the project root.
"""

from .analysis import BenchData, crossover, load, report_text, verify_table
from .figure import figure_svg
from .timing import SWEEPS, Size, floor_bytes, floor_elements, machine_info, pin_threads

__all__ = [
    "SWEEPS",
    "BenchData",
    "Size",
    "crossover",
    "figure_svg",
    "floor_bytes",
    "floor_elements",
    "load",
    "machine_info",
    "pin_threads",
    "report_text",
    "verify_table",
]
