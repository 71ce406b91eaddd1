"""Views of a study: ``pareto.png`` (matplotlib, for slides), ``report.html`` (plotly,
self-contained, opens offline) and the terminal table of the front."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from . import _io
from .config import TASK_QUALITY
from .tasks import curve_attr, get_task

_LOG_SCALE = {"params", "macs", "size_mb", "params_non_embedding"}
_LABELS = {
    "accuracy": "validation accuracy",
    "params": "parameters",
    "macs": "MACs / image",
    "size_mb": "state dict (MB)",
    "latency_ms": "latency (ms)",
    "perplexity": "validation perplexity",
    "token_accuracy": "next-token accuracy",
    "params_non_embedding": "non-embedding parameters",
    "prefill_ms": "prefill (ms)",
    "decode_ms_per_token": "decode (ms / token)",
}
_QUALITY = {quality for quality, _ in TASK_QUALITY.values()} | {"token_accuracy"}
_EXTRA = ("test_accuracy", "test_perplexity", "params", "params_non_embedding", "macs", "size_mb", "latency_ms", "prefill_ms", "decode_ms_per_token")
"""columns shown after the objectives where a front has them"""


def format_metric(name: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if name in ("accuracy", "test_accuracy", "token_accuracy", "test_token_accuracy"):
        return f"{value:.4f}"
    if name in ("params", "macs", "params_non_embedding", "params_embedding"):
        return f"{int(value):,}"
    if name in ("size_mb", "latency_ms", "perplexity", "test_perplexity", "prefill_ms", "decode_ms_per_token"):
        return f"{value:.3f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pairs(objectives: dict[str, str]) -> list[tuple[str, str]]:
    """(x, y) panels: the quality metric (accuracy, perplexity) against each cost; without
    one, each pair of objectives."""
    names = list(objectives)
    quality = next((m for m in names if m in _QUALITY), None)
    if quality is not None:
        return [(m, quality) for m in names if m != quality] or [("params", quality)]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]] or [(names[0], names[0])]


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_png(path: Path, complete: pd.DataFrame, front: pd.DataFrame, objectives: dict[str, str], teacher: dict[str, Any]) -> None:
    plt = pyplot()
    pairs = _pairs(objectives)
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.2), squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs):
        if len(complete) and x in complete and y in complete:
            ax.scatter(complete[x], complete[y], s=18, c="#bbbbbb", label="completed trials")
        if len(front) and x in front and y in front:
            f = front.sort_values(x)
            ax.scatter(f[x], f[y], s=36, c="#d62728", label="Pareto front", zorder=3)
            for _, row in f.iterrows():
                ax.annotate(str(int(row["number"])), (row[x], row[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        tm = teacher.get("metrics", {})
        if x in tm and y in tm:
            ax.scatter([tm[x]], [tm[y]], marker="*", s=160, c="#1f77b4", label="teacher", zorder=4)
        if x in _LOG_SCALE:
            ax.set_xscale("log")
        ax.set_xlabel(_LABELS.get(x, x))
        ax.set_ylabel(_LABELS.get(y, y))
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"autodistill: {pairs[0][1]} vs cost (front latency re-measured alone)", fontsize=10)
    fig.tight_layout()
    _io.atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)


def _hover(frame: pd.DataFrame) -> list[str]:
    params = [c for c in frame.columns if c.startswith("param.")]
    out = []
    for _, row in frame.iterrows():
        bits = [f"trial {int(row['number'])}"]
        bits += [f"{c[6:]}={row[c]}" for c in params if pd.notna(row[c])]
        out.append("<br>".join(bits))
    return out


MIN_IMPORTANCE_TRIALS = 8
"""completed trials below which no importances are computed. fANOVA's forest over fewer
points ranks noise: in a 6-parameter study where one parameter drives the objective (random
sampling, 10 seeds), over 4 trials that parameter gets 0.21 ± 0.07 and the largest of four
irrelevant ones 0.23; over 8 trials 0.51 ± 0.14 against 0.18. (Importing scikit-learn's forests
for them also costs ~2 s of a small study's report.)"""


def write_html(path: Path, config, trials: pd.DataFrame, front: pd.DataFrame, study, summary: dict[str, Any]) -> None:
    """``report.html``: the front table and the study's figures in one self-contained page."""
    objectives = config.objectives
    complete = trials[trials["state"] == "COMPLETE"]
    figures = [
        _cost_figure(objectives, complete, front),
        _front_3d(objectives, complete, front),
        _hypervolume_figure(summary.get("hypervolume_history") or []),
        _importance_figure(summary.get("importances") or {}),
        _curves_figure(study, get_task(config.task).quality),
    ]
    figures = [f for f in figures if f is not None]
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"fig-{i}") for i, f in enumerate(figures)]
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        parts.append(f"<p>Parameter importances: not computed from {len(complete)} completed trial(s); fANOVA needs at least {MIN_IMPORTANCE_TRIALS}.</p>")
    show_cols = ["number", *objectives, *[c for c in (*_EXTRA, "family", "shape", "init_used", "compression") if c in front and c not in objectives]]
    table = front[[c for c in show_cols if c in front]].to_html(index=False, float_format=lambda v: f"{v:.4g}") if len(front) else "<p>no completed trial</p>"
    teacher = summary["teacher"]
    quality = get_task(config.task).quality
    counts = ", ".join(f"{k.lower()} {v}" for k, v in summary["trials"].items() if v)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>autodistill: {html.escape(config.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}}</style>
</head><body>
<h1>autodistill study <code>{html.escape(config.name)}</code></h1>
<p>Trials: {html.escape(counts)}. Objectives: {html.escape(", ".join(f"{k} ({v})" for k, v in objectives.items()))}.
Normalised hypervolume: {summary["hypervolume"]:.4f}.</p>
<p>Teacher: {html.escape(str(teacher.get("arch")))}, {teacher["metrics"]["params"]:,} params, {_LABELS.get(quality, quality)} {format_metric(quality, teacher["metrics"].get(quality))}.</p>
<h2>Pareto front</h2>
{table}
{"".join(parts)}
</body></html>
"""
    _io.write_text(path, page)


def _cost_figure(objectives: dict[str, str], complete: pd.DataFrame, front: pd.DataFrame):
    """The quality metric against each cost (or each pair of objectives): all trials and the front."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = _pairs(objectives)
    fig = make_subplots(rows=1, cols=len(pairs), subplot_titles=[f"{y} vs {x}" for x, y in pairs])
    for col, (x, y) in enumerate(pairs, start=1):
        if len(complete):
            fig.add_trace(
                go.Scatter(
                    x=complete[x],
                    y=complete[y],
                    mode="markers",
                    name="trials",
                    marker={"color": "#aaaaaa"},
                    text=_hover(complete),
                    hoverinfo="text+x+y",
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        if len(front):
            f = front.sort_values(x)
            fig.add_trace(
                go.Scatter(
                    x=f[x],
                    y=f[y],
                    mode="markers+lines",
                    name="Pareto front",
                    marker={"color": "#d62728", "size": 9},
                    line={"shape": "hv", "dash": "dot"},
                    text=_hover(f),
                    hoverinfo="text+x+y",
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=x, type="log" if x in _LOG_SCALE else "linear", row=1, col=col)
        fig.update_yaxes(title_text=y, row=1, col=col)
    fig.update_layout(height=450, title="Accuracy vs cost")
    return fig


def _front_3d(objectives: dict[str, str], complete: pd.DataFrame, front: pd.DataFrame):
    """The first three objectives in 3-D (None with fewer objectives or no completed trial)."""
    import plotly.graph_objects as go

    three = [m for m in objectives][:3]
    if len(three) < 3 or not len(complete):
        return None

    def points(frame: pd.DataFrame, size: int, color: str, name: str):
        x, y, z = (frame[m] for m in three)
        return go.Scatter3d(x=x, y=y, z=z, mode="markers", marker={"size": size, "color": color}, name=name, text=_hover(frame))

    fig3 = go.Figure(points(complete, 3, "#aaaaaa", "trials"))
    if len(front):
        fig3.add_trace(points(front, 6, "#d62728", "Pareto front"))
    fig3.update_layout(height=550, title="The front in 3-D", scene={"xaxis_title": three[0], "yaxis_title": three[1], "zaxis_title": three[2]})
    return fig3


def _hypervolume_figure(history: list[dict[str, Any]]):
    import plotly.graph_objects as go

    if not history:
        return None
    hv = go.Figure(
        go.Scatter(
            x=[h["minutes"] for h in history],
            y=[h["hypervolume"] for h in history],
            mode="lines+markers",
            line={"shape": "hv"},
            text=[f"after trial {h['trial']} ({h['complete']} complete)" for h in history],
            hoverinfo="text+x+y",
            name="hypervolume",
        )
    )
    hv.update_layout(
        height=380,
        title="Normalised hypervolume of the front over the study (in-trial latency)",
        xaxis_title="minutes since the first trial started",
        yaxis_title="normalised hypervolume",
    )
    return hv


def _importance_figure(importances: dict[str, dict[str, float]]):
    import plotly.graph_objects as go

    if not importances:
        return None
    imp = go.Figure()
    for metric, values in importances.items():
        names = list(values)[::-1]
        imp.add_trace(go.Bar(y=names, x=[values[n] for n in names], orientation="h", name=metric))
    imp.update_layout(
        height=120 + 28 * max(len(v) for v in importances.values()) * max(1, len(importances)),
        barmode="group",
        title="Parameter importances (Optuna fANOVA over completed trials; parameters that exist only for some families are left out by the evaluator)",
        xaxis_title="importance",
    )
    return imp


def _curves_figure(study, quality: str):
    """The quality metric (validation accuracy, perplexity) per epoch of every trial, completed vs stopped."""
    import plotly.graph_objects as go

    colors = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "FAIL": "#d62728"}
    curves = go.Figure()
    shown: set[str] = set()
    for t in study.get_trials(deepcopy=False):
        curve = t.user_attrs.get(curve_attr(quality)) or []
        if not curve:
            continue
        state = "FAIL" if t.state.name == "FAIL" else t.state.name
        label = {"COMPLETE": "completed", "PRUNED": "stopped", "FAIL": "failed or interrupted"}.get(state, state.lower())
        curves.add_trace(
            go.Scatter(
                x=list(range(1, len(curve) + 1)),
                y=curve,
                mode="lines",
                name=label,
                legendgroup=label,
                showlegend=label not in shown,
                text=f"trial {t.number} ({t.state.name.lower()})",
                hoverinfo="text+x+y",
                line={"width": 1, "color": colors.get(state, "#999999"), "dash": "solid" if state == "COMPLETE" else "dot"},
            )
        )
        shown.add(label)
    label = _LABELS.get(quality, quality)
    curves.update_layout(height=400, title=f"{label[0].upper()}{label[1:]} per epoch: completed vs stopped trials", xaxis_title="epoch", yaxis_title=quality)
    return curves


def front_table(front: pd.DataFrame, objectives: dict[str, str], teacher: dict[str, Any] | None = None, title: str = "Pareto front"):
    """A rich table of the front (what ``autodistill show`` prints)."""
    extra = [c for c in _EXTRA if c in front and c not in objectives]
    cols = [*objectives, *extra]
    table = Table(title=title, title_justify="left")
    table.add_column("trial", justify="right")
    table.add_column("family")
    compressed = "compression" in front and (front["compression"].fillna("-") != "-").any()
    if compressed:
        table.add_column("compression")
    for c in cols:
        table.add_column(c, justify="right")
    if teacher:
        tm = teacher["metrics"]
        table.add_row(
            "teacher", str(teacher.get("family", "")), *([""] if compressed else []), *(format_metric(c, tm.get(c, np.nan)) for c in cols), style="dim"
        )
    for _, row in front.iterrows():
        family = row.get("family", row.get("param.student.family", ""))
        if isinstance(row.get("shape"), str):  # a language model: family and shape
            family = f"{family} {row['shape']}"
        how = [str(row["compression"]) if pd.notna(row["compression"]) else "-"] if compressed else []
        table.add_row(str(int(row["number"])), str(family) if pd.notna(family) else "", *how, *(format_metric(c, row.get(c)) for c in cols))
    return table
