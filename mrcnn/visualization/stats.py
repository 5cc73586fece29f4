"""Tables and evaluation plots: the statistics half of `mrcnn.visualize`.

All figures are `matplotlib.figure.Figure` objects built without ``pyplot``
(headless, no global state); they are returned to the caller.
"""

import html
import io

import numpy as np
from matplotlib.figure import Figure

__all__ = ["table_to_text", "table_to_html", "display_table", "weight_stats_table",
           "display_weight_stats", "plot_precision_recall", "plot_overlaps",
           "NotebookFigure", "new_figure", "show_if_notebook", "Shown", "ShownRows"]


# ----------------------------------------------------------------------------- notebooks
def _in_notebook():
    """True inside a Jupyter kernel (not in scripts or terminal IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _publish_png(fig):
    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    display(Image(data=buffer.getvalue()))


class NotebookFigure(Figure):
    """A Figure made by a drawing function inside Jupyter.

    The function shows it at once (as ``plt.show()`` did in the old API, so
    drawing in a loop shows every figure). When the same figure is then the
    cell's result, IPython calls `_ipython_display_`, which skips that one
    repeat; displaying it again later works as usual.
    """

    _skip_next_display = False

    def _ipython_display_(self):
        if self._skip_next_display:
            self._skip_next_display = False
            return
        _publish_png(self)


def new_figure(figsize=None):
    """A new Figure (a `NotebookFigure` inside Jupyter); never touches pyplot."""
    cls = NotebookFigure if _in_notebook() else Figure
    return cls(figsize=figsize)


def show_if_notebook(fig):
    """Show a `NotebookFigure` now (no-op for plain Figures); returns ``fig``."""
    if isinstance(fig, NotebookFigure):
        _publish_png(fig)
        fig._skip_next_display = True
    return fig


# ----------------------------------------------------------------------------- tables
def _rows(table):
    return [[str(cell) for cell in row] for row in table]


def table_to_text(table):
    """Rows of cells -> a plain-text table, columns left-aligned and padded.

    Args:
        table: list of rows, each a list of cells (any objects, shown with ``str``).
            The first row is treated as the header and underlined.
    """
    rows = _rows(table)
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    rows = [r + [""] * (ncols - len(r)) for r in rows]
    widths = [max(len(r[c]) for r in rows) for c in range(ncols)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table_to_html(table):
    """Rows of cells -> an HTML ``<table>`` (cells escaped, first row as header)."""
    rows = _rows(table)
    out = ["<table>"]
    for i, row in enumerate(rows):
        tag = "th" if i == 0 else "td"
        cells = "".join(f"<{tag} style='text-align:left'>{html.escape(c)}</{tag}>"
                        for c in row)
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


class Shown(str):
    """What a display function returns after it has shown it: a plain ``str``
    (or `ShownRows` list) that a notebook does not show again as the cell's value."""

    def _ipython_display_(self):
        pass


class ShownRows(list):
    """Table rows already shown (see `Shown`); otherwise a plain list."""

    def _ipython_display_(self):
        pass


def display_table(table):
    """Show a table: as HTML in a Jupyter notebook, as plain text (printed) elsewhere.

    Args:
        table: list of rows, each a list of cells; the first row is the header.

    Returns:
        The rendered HTML or text (a `Shown` str: not shown twice as a cell's value).
    """
    if _in_notebook():
        from IPython.display import HTML, display
        rendered = table_to_html(table)
        display(HTML(rendered))
    else:
        rendered = table_to_text(table)
        print(rendered)
    return Shown(rendered)


# ----------------------------------------------------------------------------- weights
_NOT_KERNEL_SUFFIXES = ("bias", "beta", "moving_mean", "moving_variance", "gamma")


def _weight_flags(name, values):
    """Warnings for one weight array: non-finite, constant kernel, huge values."""
    flags = []
    if values.size == 0:
        return flags
    if not np.all(np.isfinite(values)):
        flags.append("*** NaN/Inf")
        return flags
    short = name.split("/")[-1].split(":")[0]
    if short not in _NOT_KERNEL_SUFFIXES and values.size > 1 and float(values.std()) == 0.0:
        flags.append("*** dead? (all values equal)")
    if float(np.abs(values).max()) > 1000:
        flags.append("*** Overflow?")
    return flags


def weight_stats_table(model):
    """Per-weight statistics of a Keras model (or an `MaskRCNN` wrapping one).

    Returns:
        list of rows ``[name, shape, min, max, std, flags]`` with a header row
        first. ``flags`` names anything suspicious: NaN/Inf values, a kernel
        whose values are all equal ("dead?"), or ``|value| > 1000`` ("Overflow?").
    """
    keras_model = getattr(model, "keras_model", model)
    if not hasattr(keras_model, "weights"):
        raise ValueError(f"display_weight_stats: expected a keras.Model or an object with "
                         f".keras_model, got {type(model).__name__}")
    rows = [["WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD", "FLAGS"]]
    for variable in keras_model.weights:
        name = getattr(variable, "path", None) or variable.name
        values = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        finite = values[np.isfinite(values)] if values.size else values
        if finite.size:
            stats = [f"{finite.min():+9.4f}", f"{finite.max():+9.4f}", f"{finite.std():+9.4f}"]
        else:
            stats = ["nan"] * 3
        rows.append([name, str(values.shape)] + stats
                    + [" ".join(_weight_flags(name, values))])
    return rows


def display_weight_stats(model):
    """Print (or show as HTML in a notebook) `weight_stats_table` of the model.

    Returns:
        The table rows (header first), so callers can inspect the flags (a
        `ShownRows` list: a notebook does not print it again as the cell's value).
    """
    rows = weight_stats_table(model)
    display_table(rows)
    return ShownRows(rows)


# ----------------------------------------------------------------------------- plots
def plot_precision_recall(AP, precisions, recalls):
    """Precision-recall curve (step plot) titled with the AP.

    Args:
        AP: average precision (float).
        precisions, recalls: 1-D arrays of equal length, as returned by
            `mrcnn.evaluation.metrics.compute_ap`.

    Returns:
        The Figure.
    """
    precisions = np.asarray(precisions, dtype=np.float64).ravel()
    recalls = np.asarray(recalls, dtype=np.float64).ravel()
    if precisions.shape != recalls.shape:
        raise ValueError(f"plot_precision_recall: precisions {precisions.shape} and "
                         f"recalls {recalls.shape} differ in length")
    fig = new_figure(figsize=(6, 5))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(f"Precision-Recall Curve. AP@50 = {float(AP):.3f}")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1.1)
    ax.set_ylim(0, 1.1)
    ax.plot(recalls, precisions, drawstyle="steps-post")
    return show_if_notebook(fig)


def plot_overlaps(gt_class_ids, pred_class_ids, pred_scores, overlaps, class_names,
                  threshold=0.5):
    """Grid of IoUs between predictions (rows) and ground-truth instances (columns).

    Args:
        gt_class_ids: int ``[G]``; pred_class_ids: int ``[P]``; pred_scores: ``[P]``.
        overlaps: ``[P, G]`` IoUs (e.g. from `mrcnn.structures.boxes.compute_overlaps_masks`).
        class_names: list indexed by class id.
        threshold: cells with IoU above it are labelled "match" (same class) or
            "wrong" (different class).

    Returns:
        The Figure.
    """
    gt_class_ids = np.asarray(gt_class_ids).astype(np.int64).ravel()
    pred_class_ids = np.asarray(pred_class_ids).astype(np.int64).ravel()
    pred_scores = np.asarray(pred_scores, dtype=np.float64).ravel()
    overlaps = np.asarray(overlaps, dtype=np.float64).reshape(
        len(pred_class_ids), len(gt_class_ids))
    if pred_scores.shape[0] != pred_class_ids.shape[0]:
        raise ValueError(f"plot_overlaps: {pred_scores.shape[0]} scores for "
                         f"{pred_class_ids.shape[0]} predictions")

    def name(c):
        return class_names[c] if 0 <= c < len(class_names) else str(c)

    fig = new_figure(figsize=(max(4, 1 + 1.2 * len(gt_class_ids)),
                          max(4, 1 + 0.8 * len(pred_class_ids))))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(overlaps, interpolation="nearest", cmap="Blues", vmin=0, vmax=1,
              aspect="auto")
    ax.set_yticks(np.arange(len(pred_class_ids)))
    ax.set_yticklabels([f"{name(c)} ({s:.2f})" for c, s in zip(pred_class_ids, pred_scores)])
    ax.set_xticks(np.arange(len(gt_class_ids)))
    ax.set_xticklabels([name(c) for c in gt_class_ids], rotation=90)
    for i in range(overlaps.shape[0]):
        for j in range(overlaps.shape[1]):
            value = overlaps[i, j]
            label = ""
            if value > threshold:
                label = "match" if gt_class_ids[j] == pred_class_ids[i] else "wrong"
            color = "white" if value > threshold else ("grey" if value < 0.2 else "black")
            ax.text(j, i, f"{value:.3f}\n{label}", ha="center", va="center", fontsize=9,
                    color=color)
    ax.set_xlabel("Ground Truth")
    ax.set_ylabel("Predictions")
    ax.set_title(f"IoU (threshold {threshold})")
    fig.tight_layout()
    return show_if_notebook(fig)
