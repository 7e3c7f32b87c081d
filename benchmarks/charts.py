"""The charts of docs/img (benchmarks/figures.py draws them): training curves, and speed side by side.

matplotlib's Figure is used without pyplot, as in plotting.py, and imported
only when a chart is drawn.
"""
import json
import math

from messages import UserError, note

COLOURS = ["#1a5fb4", "#c01c28", "#26a269", "#e66100", "#613583", "#865e3c"]


def training_figure(runs):
    """runs: {name: scalars} -> the figure: losses by step (left), dev BLEU by epoch (right)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=100)
    loss, bleu = figure.subplots(1, 2)
    for colour, (name, found) in zip(COLOURS, runs.items()):
        steps, values = zip(*found["mean_loss"])
        loss.plot(steps, values, color=colour, alpha=0.45, linewidth=1, label=f"{name}: training loss")
        if "dev_loss" in found:
            steps, values = zip(*found["dev_loss"])
            loss.plot(steps, values, color=colour, marker="o", markersize=3, label=f"{name}: dev loss")
        if "dev_bleu" in found:
            values = [value for _, value in found["dev_bleu"]]
            bleu.plot(range(1, len(values) + 1), values, color=colour, marker="o", markersize=3, label=name)
    loss.set(xlabel="optimizer step", ylabel="label-smoothed cross-entropy per token", title="Loss")
    bleu.set(xlabel="epoch", ylabel="sacreBLEU (greedy)", title="Dev BLEU")
    for axes in (loss, bleu):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def speed_figure(records):
    """records: bench JSON objects with a "label" -> (bar charts: training tokens/s; decoding sentences/s at
    batch 64 and ms per sentence at batch 1, the number of records drawn); a record without a speed is left out
    with a note."""
    from matplotlib.figure import Figure

    panels = [("training", "target tokens/s", lambda r: r.get("target_tokens_per_s") or r.get("tokens_per_s")),
              ("decoding, batch 64", "sentences/s", lambda r: r.get("sentences_per_s")),
              ("decoding, one sentence", "ms per sentence", lambda r: r.get("ms_per_sentence"))]
    groups, values = {title: [] for title, _, _ in panels}, dict((title, value) for title, _, value in panels)
    for record in records:
        kind = ("decoding, one sentence" if "ms_per_sentence" in record
                else "decoding, batch 64" if "sentences_per_s" in record else "training")
        figure = values[kind](record)
        if isinstance(figure, (int, float)) and not isinstance(figure, bool) and math.isfinite(figure):
            groups[kind].append(record)
        else:  # (a line of another tool, or a run that measured nothing)
            note(f"--bench {record['label']}: no speed to draw in {json.dumps(record)[:120]}; left out")
    shown = [(title, unit, value) for title, unit, value in panels if groups[title]]
    if not shown:
        raise UserError("no --bench record holds a speed to draw")
    figure = Figure(figsize=(5 * len(shown), 4), dpi=100)
    for axes, (title, unit, value) in zip(figure.subplots(1, len(shown), squeeze=False)[0], shown):
        labels = [record["label"] for record in groups[title]]
        bars = axes.barh(labels, [value(record) for record in groups[title]],
                         color=[COLOURS[i % len(COLOURS)] for i in range(len(labels))])
        axes.bar_label(bars, fmt="{:,.0f}" if unit != "ms per sentence" else "{:,.1f}", padding=3, fontsize=8)
        axes.set(title=title, xlabel=unit)
        axes.invert_yaxis()
        axes.margins(x=0.25)
        axes.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    return figure, sum(len(group) for group in groups.values())
