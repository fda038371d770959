"""The demo's outputs: the printed table, and a report folder (``index.html``, PNGs, ``results.json``).

* ``format_table``: one row per method and ICFRR iteration, columns mAP@all, mAP@200, P@100, P@200.
* ``metrics.png``: each metric over the ICFRR iterations (both semantics) with no re-ranking and ClusterRetri as
  horizontal lines. The y-values of every drawn line are read back from the matplotlib figure and stored in
  ``results.json["plot"]``, so a test can check that the picture shows the numbers the table printed.
* ``query_<i>.png``: a query and its top-10 before and after ICFRR; each result framed green (same class as the
  query) or red, with a tick or a cross.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import io
from .experiment import COMPARED, METHODS, METRIC_NAMES, DemoResult

__all__ = ["format_table", "format_timings", "format_comparison", "format_finetune_comparison", "write_report",
           "table_rows"]

CELL = 128  # px per image in the query figures (the 64 px emoji drawn at 2x)
PAD = 8
BORDER = 5
GREEN, RED = (22, 150, 60), (210, 40, 40)


# -- table ------------------------------------------------------------------------------------------------------------
def table_rows(result: DemoResult) -> List[Dict[str, object]]:
    """The printed table as data: dicts with "method" (label), "iter" (int or None) and the four metrics."""
    rows = []
    for key, label in METHODS.items():
        series = result.metrics[key]
        for t, m in enumerate(series):
            rows.append({"method": label, "key": key, "iter": t if len(series) > 1 else None,
                         **{name: m[name] for name in METRIC_NAMES}})
    return rows


def format_table(result: DemoResult) -> str:
    """The metrics table as text (4 decimals). ICFRR rows are per iteration; iteration 0 is the initial ranking."""
    c = result.config
    head = (f"{len(result.query_ids)} queries (line art) -> {len(result.gallery_ids)} gallery items (colour), "
            f"labels: Unicode emoji {c.level} ({len(result.class_names)} classes)\n"
            f"ICFRR: k_g={c.k_g} k_q={c.k_q} beta={c.beta} iters={c.iters}; "
            f"ClusterRetri: K={c.clusters} M={c.subspaces} lambda={c.fusion}\n")
    width = max(len(v) for v in METHODS.values())
    lines = [f"{'method':<{width}}  {'iter':>4}  " + "  ".join(f"{n:>7}" for n in METRIC_NAMES)]
    lines.append("-" * len(lines[0]))
    for r in table_rows(result):
        it = "-" if r["iter"] is None else str(r["iter"])
        lines.append(f"{r['method']:<{width}}  {it:>4}  " + "  ".join(f"{r[n]:>7.4f}" for n in METRIC_NAMES))
    return head + "\n".join(lines)


def format_finetune_comparison(rows: List[Dict[str, object]]) -> str:
    """The before/after fine-tuning table of :func:`~icfrr_fast.demo.experiment.compare_features` as text."""
    fw = max(len(str(r["features"])) for r in rows)
    mw = max(len(str(r["method"])) for r in rows)
    head = f"{'features':<{fw}}  {'method':<{mw}}  {'iter':>4}  " + "  ".join(f"{n:>7}" for n in METRIC_NAMES)
    lines = ["before / after fine-tuning, before / after ICFRR:", head, "-" * len(head)]
    for r in rows:
        it = "-" if r["iter"] is None else str(r["iter"])
        lines.append(f"{r['features']:<{fw}}  {r['method']:<{mw}}  {it:>4}  "
                     + "  ".join(f"{r[n]:>7.4f}" for n in METRIC_NAMES))
    return "\n".join(lines)


def format_comparison(result: DemoResult) -> str:
    """The re-rankers compared on the same features (the paper's comparison table), with each one's time."""
    if not result.comparison:
        return ""
    width = max(len(COMPARED[k]) for k in result.comparison)
    lines = [f"{'method':<{width}}  " + "  ".join(f"{n:>7}" for n in METRIC_NAMES) + "  time (s)"]
    for key, m in result.comparison.items():
        lines.append(f"{COMPARED[key]:<{width}}  " + "  ".join(f"{m[n]:>7.4f}" for n in METRIC_NAMES)
                     + f"  {m['seconds']:8.3f}")
    return "\n".join(lines)


def format_timings(result: DemoResult) -> str:
    """The icfrr_fast vs icfrr_fast.reference timings as text."""
    t = result.timings
    n = t["rerank_queries"]
    return "\n".join([
        f"icfrr_fast vs icfrr_fast.reference on this data ({t['threads']} threads; icfrr_fast: median of "
        f"{result.config.timing_repeats} run{'s' if result.config.timing_repeats != 1 else ''}):",
        f"  gallery graph (G={len(result.gallery_ids)}, k_g={result.config.k_g})  icfrr_fast "
        f"{t['graph_icfrr_fast_s'] * 1e3:9.1f} ms   reference {t['graph_reference_s'] * 1e3:9.1f} ms   "
        f"x{t['speedup_graph']:.1f}",
        f"  ICFRR re-rank ({n} queries, {result.config.iters} iters)  icfrr_fast "
        f"{t['rerank_icfrr_fast_s'] * 1e3:9.1f} ms"
        f"   reference {t['rerank_reference_s'] * 1e3:9.1f} ms   x{t['speedup_rerank']:.1f}",
        f"  graph + re-rank: icfrr_fast is x{t['speedup_total']:.1f} faster",
    ])


# -- plot -------------------------------------------------------------------------------------------------------------
def _plot_metrics(result: DemoResult, path: Path) -> Dict[str, Dict[str, List[float]]]:
    """Draw metrics.png; return {metric: {line label: y-values as drawn}} read back from the figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    T = result.config.iters
    xs = list(range(T + 1))
    fig, axes = plt.subplots(1, len(METRIC_NAMES), figsize=(4.2 * len(METRIC_NAMES), 3.6), constrained_layout=True)
    styles = {"icfrr_reference": dict(color="C0", marker="o"), "icfrr_paper": dict(color="C1", marker="s"),
              "none": dict(color="0.3", linestyle="--"), "cluster_retri": dict(color="C2", linestyle=":")}
    drawn: Dict[str, Dict[str, List[float]]] = {}
    for ax, name in zip(axes, METRIC_NAMES):
        for key, label in METHODS.items():
            series = [m[name] for m in result.metrics[key]]
            ys = series if len(series) == len(xs) else [series[0]] * len(xs)
            ax.plot(xs, ys, label=label, **styles[key])
        ax.set_title(name)
        ax.set_xlabel("ICFRR iteration")
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        drawn[name] = {line.get_label(): [float(y) for y in line.get_ydata()] for line in ax.get_lines()}
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"Emoji line art -> colour, {len(result.query_ids)} queries, labels: Unicode {result.config.level}",
                 fontsize=11)
    io.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return drawn


# -- query figures ----------------------------------------------------------------------------------------------------
def _as_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def _mark(draw, x: int, y: int, ok: bool) -> None:
    """A tick (ok) or a cross in a 22 px disc at (x, y)."""
    col = GREEN if ok else RED
    draw.ellipse([x, y, x + 22, y + 22], fill=(255, 255, 255), outline=col, width=2)
    if ok:
        draw.line([(x + 5, y + 12), (x + 9, y + 17), (x + 17, y + 6)], fill=col, width=3)
    else:
        draw.line([(x + 6, y + 6), (x + 16, y + 16)], fill=col, width=3)
        draw.line([(x + 16, y + 6), (x + 6, y + 16)], fill=col, width=3)


def _query_figure(result: DemoResult, pos: int, rows: Sequence[str], path: Path) -> Dict[str, object]:
    """One query, then for each method in ``rows`` its top-10 with correct/incorrect marks. Returns its metadata."""
    from PIL import Image, ImageDraw, ImageFont

    ds = result.dataset
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    top = result.rankings[rows[0]].shape[1]
    label_w = 170
    width = label_w + (top + 1) * (CELL + PAD) + PAD
    row_h = CELL + 2 * PAD + 18
    height = 34 + len(rows) * row_h
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    qid = int(result.query_ids[pos])
    q_lab = int(result.query_labels[pos])
    cls = result.class_names
    ap = result.average_precision
    draw.text((PAD, 8), f"query {qid}: {ds.names[qid]}  [{cls[q_lab]}]   AP {float(ap[rows[0]][pos]):.3f} -> "
              f"{float(ap[rows[-1]][pos]):.3f}   green = same class, red = other class", fill=(0, 0, 0), font=font)
    q_img = Image.fromarray(_as_rgb(ds.queries[qid])).resize((CELL, CELL), Image.NEAREST)
    info = {"query": qid, "name": str(ds.names[qid]), "class": cls[q_lab], "rows": {},
            "average_precision": {key: float(ap[key][pos]) for key in rows}}
    for r, key in enumerate(rows):
        y = 34 + r * row_h
        draw.text((PAD, y + CELL // 2), METHODS[key] if key != "none" else "before (no re-ranking)", fill=(0, 0, 0),
                  font=font)
        if key.startswith("icfrr"):
            draw.text((PAD, y + CELL // 2 + 18), f"after {result.config.iters} iterations", fill=(90, 90, 90),
                      font=small)
        x = label_w
        canvas.paste(q_img, (x, y + PAD))
        draw.rectangle([x - 1, y + PAD - 1, x + CELL, y + PAD + CELL], outline=(0, 0, 0), width=1)
        ids = [int(result.gallery_ids[j]) for j in result.rankings[key][pos].tolist()]
        correct = [int(result.gallery_labels[j]) == q_lab for j in result.rankings[key][pos].tolist()]
        for i, (gid, ok) in enumerate(zip(ids, correct)):
            x = label_w + (i + 1) * (CELL + PAD)
            img = Image.fromarray(_as_rgb(ds.gallery[gid])).resize((CELL, CELL), Image.NEAREST)
            canvas.paste(img, (x, y + PAD))
            draw.rectangle([x - BORDER + 1, y + PAD - BORDER + 1, x + CELL + BORDER - 2, y + PAD + CELL + BORDER - 2],
                           outline=GREEN if ok else RED, width=BORDER)
            _mark(draw, x + CELL - 26, y + PAD + 4, ok)
            draw.text((x, y + PAD + CELL + 4), f"{i + 1}. {str(ds.names[gid])[:17]}", fill=(60, 60, 60), font=small)
        info["rows"][key] = {"gallery": ids, "correct": correct}
    io.atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))
    info["file"] = path.name
    info["size"] = [width, height]
    return info


# -- html -------------------------------------------------------------------------------------------------------------
def _html(result: DemoResult, table: str, timings: str, figures: List[Dict[str, object]],
          finetune: Optional[List[Dict[str, object]]] = None) -> str:
    e = html.escape
    compared = ""
    if finetune:
        body = "".join(
            f"<tr><td>{e(str(r['features']))}</td><td>{e(str(r['method']))}</td>"
            f"<td>{'-' if r['iter'] is None else r['iter']}</td>"
            + "".join(f"<td>{r[n]:.4f}</td>" for n in METRIC_NAMES) + "</tr>" for r in finetune)
        compared = ("<h2>Before / after fine-tuning, before / after ICFRR</h2><table><tr><th>features</th>"
                    "<th>method</th><th>iter</th>" + "".join(f"<th>{n}</th>" for n in METRIC_NAMES)
                    + f"</tr>{body}</table>")
    weights = result.backbone.get("weights_kind", "ImageNet weights")
    rows = "".join(
        f"<tr><td>{e(str(r['method']))}</td><td>{'-' if r['iter'] is None else r['iter']}</td>"
        + "".join(f"<td>{r[n]:.4f}</td>" for n in METRIC_NAMES) + "</tr>"
        for r in table_rows(result))
    figs = "".join(f'<h3>{e(str(f["name"]))} <small>[{e(str(f["class"]))}]</small></h3>'
                   f'<img src="{e(str(f["file"]))}" alt="query {f["query"]}">' for f in figures)
    notes = "".join(f"<li>{e(n)}</li>" for n in result.notes)
    keys = list(METHODS)
    per_class = "".join(
        f"<tr><td>{e(name)}</td><td>{v['queries']}</td><td>{v['gallery']}</td>"
        + "".join(f"<td>{v[k]:.4f}</td>" for k in keys) + "</tr>" for name, v in result.per_class.items())
    meta = result.dataset.metadata
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>icfrr_fast demo: emoji line art -> colour</title>
<style>body{{font-family:sans-serif;max-width:1700px;margin:1em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child{{text-align:left}}
img{{max-width:100%}} pre{{background:#f4f4f4;padding:8px}}</style></head><body>
<h1>ICFRR on emoji: line art queries, colour gallery</h1>
<p>Queries: Fluent Emoji High Contrast (MIT, Microsoft), gallery: Noto Emoji (Apache-2.0, Google); features:
{e(result.backbone.get('name', ''))} ({e(weights)}) at {e(result.backbone.get('input_size', ''))} px. A result is
correct when it shares the query's Unicode emoji {e(result.config.level)}. Data set built
{e(str(meta.get('built')))}, sha256 {e(str(meta.get('sha256'))[:16])}...</p>
{compared}
<h2>Metrics per iteration</h2>
<table><tr><th>method</th><th>iter</th>{''.join(f'<th>{n}</th>' for n in METRIC_NAMES)}</tr>{rows}</table>
<p><img src="metrics.png" alt="metrics over iterations"></p>
<h2>mAP@all per class (final iteration)</h2>
<table><tr><th>class</th><th>queries</th><th>gallery</th>{''.join(f'<th>{e(METHODS[k])}</th>' for k in keys)}</tr>
{per_class}</table>
<h2>Compared with other re-rankers (same features; time of one run over all queries)</h2>
<pre>{e(format_comparison(result))}</pre>
<h2>Speed</h2><pre>{e(timings)}</pre>
<h2>Notes</h2><ul>{notes}</ul>
<h2>Queries (one random query per class, not chosen by result)</h2>{figs}
<h2>Table as printed</h2><pre>{e(table)}</pre>
</body></html>
"""


def write_report(result: DemoResult, out: Path,
                 finetune: Optional[List[Dict[str, object]]] = None) -> Dict[str, Path]:
    """Write ``index.html``, ``metrics.png``, ``query_<i>.png`` and ``results.json`` into ``out``; with
    ``finetune`` (rows of :func:`~icfrr_fast.demo.experiment.compare_features`) also the before/after
    fine-tuning table (in the page and as ``results.json["finetune_comparison"]``).

    Returns:
        {"html": ..., "json": ..., "plot": ..., "queries": [...]} paths.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = _plot_metrics(result, out / "metrics.png")
    rows = ["none", "icfrr_reference"]
    figures = [_query_figure(result, pos, rows, out / f"query_{i:02d}.png")
               for i, pos in enumerate(result.report_queries)]
    table, timings = format_table(result), format_timings(result)
    data = result.to_json()
    data["table"] = table_rows(result)
    data["table_text"] = table
    data["comparison_text"] = format_comparison(result)
    data["plot"] = {"file": "metrics.png", "series": drawn}
    data["figures"] = figures
    if finetune:
        data["finetune_comparison"] = finetune
    io.atomic_write(out / "results.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))
    io.atomic_write(out / "index.html",
                     lambda tmp: Path(tmp).write_text(_html(result, table, timings, figures, finetune),
                                                          encoding="utf-8"))
    return {"html": out / "index.html", "json": out / "results.json", "plot": out / "metrics.png",
            "queries": [out / str(f["file"]) for f in figures]}
