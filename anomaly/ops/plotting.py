"""Figures drawn off-screen: the training loss curve and the alert report's event plots.

Matplotlib's text layout is not thread-safe and flows run groups in parallel
threads, so every figure is drawn under one lock. Figures are built with the
object API (no pyplot state) and saved as PNG without the software stamp, so
the same data gives the same bytes: reports can be compared in tests.
"""

from __future__ import annotations

import io
import threading
from typing import Mapping, Sequence

import pandas as pd

#: One figure at a time in a process (see the module docstring).
PLOT_LOCK = threading.Lock()

#: Colours that stay distinct for colour-blind readers (Okabe–Ito).
VALUE, RECONSTRUCTION, SCORE, THRESHOLD, SPAN = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7"
#: The expected range around the reconstruction (Okabe–Ito sky blue, light).
BAND, BAND_ALPHA = "#56B4E9", 0.3


def figure(width: float, height: float, dpi: int = 100):  # type: ignore[no-untyped-def]
    """A new Agg figure, never shown on screen."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi)


def png(fig) -> bytes:  # type: ignore[no-untyped-def]
    """The figure as PNG bytes, identical for identical figures (no software or date stamp)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def event_plot(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    title: str,
    bands: Mapping[str, float] | None = None,
) -> bytes:
    """The metric(s) around an event with the model's reconstruction and expected range, and the score against its threshold.

    ``frame`` is a slice of a group's scores (``timestamp`` index; the
    metric columns, ``reconstruction_<metric>`` where kept, ``anomaly_score``
    and ``threshold``). ``bands`` gives a metric's band half-width in its
    units: the reconstruction ± band (the expected range an alert needs the
    metric to leave) is shaded around the dashed reconstruction. The event's
    span is shaded on every panel. One panel per metric (at most three,
    strongest first), then the score.
    """
    shown = [m for m in metrics if m in frame.columns][:3]
    with PLOT_LOCK:
        fig = figure(8.0, 1.6 * len(shown) + 1.9, dpi=90)
        axes = fig.subplots(len(shown) + 1, 1, sharex=True, squeeze=False)[:, 0]
        for ax, metric in zip(axes, shown):
            ax.plot(frame.index, frame[metric], color=VALUE, linewidth=1.0, label=metric)
            recon = f"reconstruction_{metric}"
            band = (bands or {}).get(metric)
            if recon in frame.columns and band is not None:
                expected = frame[recon].astype(float)
                ax.fill_between(frame.index, expected - band, expected + band, color=BAND, alpha=BAND_ALPHA, linewidth=0, label="expected range")
            if recon in frame.columns:
                ax.plot(frame.index, frame[recon], color=RECONSTRUCTION, linewidth=1.0, linestyle="--", label="reconstruction")
            ax.set_ylabel(_short(metric), fontsize=8)
            ax.legend(loc="upper left", fontsize=7, frameon=False)
        score_ax = axes[-1]
        score_ax.plot(frame.index, frame["anomaly_score"], color=SCORE, linewidth=1.0, label="anomaly score")
        score_ax.plot(frame.index, frame["threshold"], color=THRESHOLD, linewidth=1.0, linestyle=":", label="threshold")
        score_ax.set_ylabel("score", fontsize=8)
        score_ax.legend(loc="upper left", fontsize=7, frameon=False)
        for ax in axes:
            ax.axvspan(start, end, color=SPAN, alpha=0.18, linewidth=0)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.25)
        _dates(score_ax)
        axes[0].set_title(title, fontsize=9, loc="left")
        fig.subplots_adjust(left=0.1, right=0.98, top=0.92 if len(shown) else 0.85, bottom=0.12, hspace=0.15)
        return png(fig)


def _dates(ax) -> None:  # type: ignore[no-untyped-def]
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _short(metric: str, width: int = 18) -> str:
    return metric if len(metric) <= width else metric[: width - 1] + "…"
