"""Pictures as PNG: a model's attention, every layer's and head's weights for one sentence.

plot_attention.py writes it to a file; dev evaluation logs the last layer's
cross-attention to TensorBoard (the docs' charts are benchmarks/charts.py's).
matplotlib's Figure is used without pyplot, so nothing here touches
matplotlib's global state (no backend to select, no figure to close), and
matplotlib is imported only when a picture is drawn.
"""
import io

from messages import UserError

CELL_INCHES, DPI = 3, 100  # each heatmap is 300 x 300 pixels


def draw(source, target, maps, layer=None, head=None):
    """The heatmap grid as a matplotlib Figure: one row per kind and layer, one column per head.

    layer, head: draw only this one (0 = first); None = all.
    """
    from matplotlib.figure import Figure  # a second of start-up that training needs only at dev evaluation

    layers, heads = next(iter(maps.values())).shape[:2]
    for name, value, limit in (("--layer", layer, layers), ("--head", head, heads)):
        if value is not None and not 0 <= value < limit:
            raise UserError(f"{name} {value} does not exist; this model has {limit} (0 to {limit - 1})")
    rows = [(kind, i) for kind in maps for i in ([layer] if layer is not None else range(layers))]
    columns = [head] if head is not None else list(range(heads))
    figure = Figure(figsize=(CELL_INCHES * len(columns), CELL_INCHES * len(rows)), dpi=DPI)
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for r, (kind, i) in enumerate(rows):
        queries = source if kind.startswith("encoder") else target
        keys = target if kind.startswith("decoder") else source
        for c, h in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(maps[kind][i, h], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"{kind}, layer {i}, head {h}", fontsize=7)
            ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=6)
            ax.set_yticks(range(len(queries)), queries, fontsize=6)
    figure.tight_layout()
    return figure


def png_bytes(figure):
    """The figure as PNG file contents."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
