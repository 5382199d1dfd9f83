"""Metrics as tables (Markdown in OpenOOD's layout, rich on the terminal) and PNG plots."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import RenderableType

    from oodkit.schemas import ScoreRun

METRIC_TITLES = {
    "auroc": "AUROC",
    "aupr_in": "AUPR-IN",
    "aupr_out": "AUPR-OUT",
    "fpr95": "FPR@95",
    "fpr95_classic": "FPR@95-classic",
}


def read_blocks(path: str | Path) -> list[dict[str, Any]]:
    """The per-method blocks of a metrics artifact's ``metrics.json``."""
    doc = json.loads((Path(path) / "metrics.json").read_text())
    return doc.get("methods", [doc])


def fmt(value: Any, scale: float = 100.0) -> str:
    """``88.38`` or ``88.38 ± 0.12`` (×100); ``-`` when missing."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{value['mean'] * scale:.2f} ± {value['std'] * scale:.2f}"
    return f"{value * scale:.2f}"


CHANCE = 0.5
BELOW_CHANCE_MARK = "⚠"
BELOW_CHANCE_NOTE = (
    f"{BELOW_CHANCE_MARK} AUROC below 50: the scores rank these OOD samples as more "
    "in-distribution than the ID test set (worse than chance); inspect the detector and score."
)


def _mean(value: Any) -> float:
    return value["mean"] if isinstance(value, dict) else value


def below_chance(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every (method, OOD set or group mean) whose AUROC (mean over runs) is below 0.5."""
    found = []
    for b in blocks:
        rows = [*b["datasets"].items(), *((f"{g} mean", v) for g, v in b["groups"].items())]
        for name, row in rows:
            if row.get("auroc") is not None and _mean(row["auroc"]) < CHANCE:
                found.append({"method": b["method"], "set": name, "auroc": _mean(row["auroc"])})
    return found


def _flagged(value: Any, metric: str) -> str:
    text = fmt(value)
    low = metric == "auroc" and value is not None and _mean(value) < CHANCE
    return f"{text} {BELOW_CHANCE_MARK}" if low else text


def _columns(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """OpenOOD column order: near sets, near mean, far sets, far mean."""
    cols: list[tuple[str, str]] = []
    for grp in ("near", "far"):
        names = list(
            dict.fromkeys(n for b in blocks for n, r in b["datasets"].items() if r["group"] == grp)
        )
        if names:
            cols += [("dataset", n) for n in names] + [("group", grp)]
    return cols


def _cell(block: dict[str, Any], col: tuple[str, str], metric: str) -> str:
    kind, name = col
    entry = (block["datasets"] if kind == "dataset" else block["groups"]).get(name)
    return _flagged(entry[metric], metric) if entry else "-"


def markdown(blocks: list[dict[str, Any]]) -> str:
    """One Markdown table per metric; rows = methods, values ×100 (mean ± std over runs)."""
    cols = _columns(blocks)
    heads = [n if k == "dataset" else f"**{n.capitalize()}**" for k, n in cols]
    parts = []
    for metric, title in METRIC_TITLES.items():
        header = ["Method", *heads] + (["ID Acc."] if metric == "auroc" else [])
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for b in blocks:
            cells = [f"{b['method']} ({b['runs']} run{'s' if b['runs'] > 1 else ''})"]
            cells += [_cell(b, c, metric) for c in cols]
            if metric == "auroc":
                cells.append(fmt(b.get("id_accuracy")))
            lines.append("| " + " | ".join(cells) + " |")
        if metric == "auroc" and below_chance(blocks):
            lines += ["", BELOW_CHANCE_NOTE]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


OPENOOD_COLUMNS = ("FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT", "ACC")
_OPENOOD_KEYS = ("fpr95", "auroc", "aupr_in", "aupr_out")


def openood_csv(blocks: list[dict[str, Any]]) -> str:
    """OpenOOD v1.5's results table (``Evaluator.eval_ood``'s CSV) for every method: a row
    per near-OOD set, ``nearood``, a row per far-OOD set, ``farood``; percent; ``ACC`` the ID
    accuracy on every row (empty for a detector of clusters). Runs of one method give their
    means (the std is in metrics.json / metrics.md)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "dataset", *OPENOOD_COLUMNS])
    for b in blocks:
        acc = b.get("id_accuracy")
        acc_cell = f"{100 * _mean(acc):.2f}" if acc is not None else ""
        for group in ("near", "far"):
            names = [n for n, d in b["datasets"].items() if d["group"] == group]
            rows = [(n, b["datasets"][n]) for n in names]
            if group in b["groups"]:
                rows.append((f"{group}ood", b["groups"][group]))
            for name, values in rows:
                cells = [f"{100 * _mean(values[k]):.2f}" for k in _OPENOOD_KEYS]
                writer.writerow([b["method"], name, *cells, acc_cell])
    return buf.getvalue()


def rich_tables(blocks: list[dict[str, Any]]) -> list[RenderableType]:
    """One terminal table per method: rows = OOD sets and group means, columns = metrics."""
    from rich.table import Table

    tables = []
    for b in blocks:
        acc = fmt(b.get("id_accuracy"))
        t = Table(title=f"{b['method']} — {b['runs']} run(s), ID accuracy {acc}, values ×100")
        t.add_column("OOD set")
        t.add_column("group")
        t.add_column("n", justify="right")
        for title in METRIC_TITLES.values():
            t.add_column(title, justify="right")
        for grp in ("near", "far"):
            for name, row in b["datasets"].items():
                if row["group"] == grp:
                    cells = [_rich_flagged(row[m], m) for m in METRIC_TITLES]
                    t.add_row(name, grp, str(row["n"]), *cells)
            if grp in b["groups"]:
                g = b["groups"][grp]
                t.add_row(
                    f"[bold]{grp} mean[/bold]",
                    grp,
                    "",
                    *(f"[bold]{_rich_flagged(g[m], m)}[/bold]" for m in METRIC_TITLES),
                )
        if below_chance([b]):
            t.caption = BELOW_CHANCE_NOTE
        tables.append(t)
    return tables


def _rich_flagged(value: Any, metric: str) -> str:
    text = _flagged(value, metric)
    return f"[red]{text}[/red]" if text.endswith(BELOW_CHANCE_MARK) else text


def summary_table(blocks: list[dict[str, Any]]) -> RenderableType:
    """One row per method: near / far AUROC and FPR@95 means and ID accuracy (×100)."""
    from rich.table import Table

    t = Table(title="AUROC / FPR@95 by method (×100, mean ± std over runs)")
    deltas = any("delta" in b for b in blocks)  # the demo's Δ to its no-outlier recipe
    for col in (
        "method",
        "runs",
        "near AUROC",
        *(["Δ near (p)"] * deltas),
        "far AUROC",
        *(["Δ far (p)"] * deltas),
        "near FPR@95",
        "far FPR@95",
        "ID acc.",
    ):
        t.add_column(col, justify="left" if col == "method" else "right")
    for b in blocks:
        g = b["groups"]
        near = [_delta(b.get("delta", {}).get("near"))] if deltas else []
        far = [_delta(b.get("delta", {}).get("far"))] if deltas else []
        t.add_row(
            b["method"],
            str(b["runs"]),
            _rich_flagged(g.get("near", {}).get("auroc"), "auroc"),
            *near,
            _rich_flagged(g.get("far", {}).get("auroc"), "auroc"),
            *far,
            fmt(g.get("near", {}).get("fpr95")),
            fmt(g.get("far", {}).get("fpr95")),
            fmt(b.get("id_accuracy")),
        )
    notes = [BELOW_CHANCE_NOTE] if below_chance(blocks) else []
    if deltas:
        notes.append(
            "Δ: AUROC minus the no-outlier (ce) recipe's, paired by seed (×100, mean ± std); p: "
            "one-sided paired t-test"
        )
    if notes:
        t.caption = "\n".join(notes)
    return t


def _delta(d: dict[str, Any] | None) -> str:
    """A paired Δ (``metrics.paired_delta``) as ``+1.23 ± 0.40 (0.03)``; - where there is none."""
    if d is None:
        return "-"
    p = "" if d["p_value"] is None else f" ({d['p_value']:.2f})"
    return f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f}{p}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def plot_method(folder: Path, label: str, run: ScoreRun) -> list[Path]:
    """ROC curves per OOD set and ID-vs-OOD ``id_score`` histograms for one run of a method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from oodkit.metrics import ood_metrics, roc_curve

    folder.mkdir(parents=True, exist_ok=True)
    roc_path = folder / f"roc-{_safe(label)}.png"
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (grp, scores) in run.ood.items():
        fpr, tpr = roc_curve(run.id_scores, scores)
        auroc = ood_metrics(run.id_scores, scores)["auroc"]
        ax.plot(fpr, tpr, label=f"{name} ({grp}) AUROC {auroc * 100:.2f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="FPR (ID flagged as OOD)", ylabel="TPR (OOD detected)", title=f"ROC — {label}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(roc_path, dpi=120)
    plt.close(fig)

    hist_path = folder / f"hist-{_safe(label)}.png"
    n = len(run.ood)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2), squeeze=False)
    for ax, (name, (grp, scores)) in zip(axes[0], run.ood.items(), strict=True):
        lo = min(run.id_scores.min(), scores.min())
        hi = max(run.id_scores.max(), scores.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
        ax.hist(run.id_scores, bins=bins, alpha=0.6, density=True, label="ID test")
        ax.hist(scores, bins=bins, alpha=0.6, density=True, label=f"{name} ({grp})")
        ax.set(xlabel="id_score (higher = ID)", title=name)
        ax.legend(fontsize=8)
    fig.suptitle(f"id_score — {label}")
    fig.tight_layout()
    fig.savefig(hist_path, dpi=120)
    plt.close(fig)
    return [roc_path, hist_path]
