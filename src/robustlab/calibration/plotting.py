"""Matplotlib drawing of a :class:`~robustlab.calibration.ReliabilityDiagram` (imported lazily)."""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab._checks import fail
from robustlab.calibration.metrics import ReliabilityDiagram
from robustlab.errors import InvalidTypeError

__all__ = ["plot_reliability"]


def plot_reliability(diagram: ReliabilityDiagram, *, ax: Any = None, title: str | None = None) -> Any:
    """Draw a reliability diagram: per-bin accuracy bars, the gap to confidence, the diagonal.

    Parameters
    ----------
    diagram : ReliabilityDiagram
        From :func:`robustlab.calibration.reliability_diagram`.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure is created when omitted.
    title : str, optional
        Axes title; default names the binning and the ECE.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding ``ax``. Matplotlib is imported only when this is called.

    Notes
    -----
    As Guo et al. (2017), Fig. 1: bars of height acc(B_m) over each bin, a hatched bar from
    acc(B_m) to conf(B_m) showing the gap, and the identity line of perfect calibration. Empty
    bins are left blank.

    Examples
    --------
    >>> import numpy as np
    >>> from robustlab.calibration import reliability_diagram
    >>> d = reliability_diagram(np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([0, 1]), n_bins=5)
    >>> fig = plot_reliability(d)  # doctest: +SKIP
    """
    if not isinstance(diagram, ReliabilityDiagram):
        fail("diagram", "a ReliabilityDiagram (from reliability_diagram)", diagram, error=InvalidTypeError)
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(4.0, 4.0))
    else:
        fig = ax.figure
    edges = diagram.bin_edges
    left, width = edges[:-1], np.diff(edges)
    full = diagram.counts > 0
    ax.bar(left[full], diagram.accuracy[full], width=width[full], align="edge",
           edgecolor="black", color="tab:blue", label="accuracy")
    gap = diagram.confidence[full] - diagram.accuracy[full]
    ax.bar(left[full], gap, bottom=diagram.accuracy[full], width=width[full], align="edge",
           edgecolor="tab:red", color="tab:red", alpha=0.3, hatch="//", label="gap to confidence")
    ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title if title is not None else
                 f"{diagram.binning} bins, ECE = {100 * diagram.ece:.2f}%")
    ax.legend(loc="upper left")
    return fig
