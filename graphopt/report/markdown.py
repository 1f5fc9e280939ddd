"""`--report out.md`: the run's report as Markdown (a row per pass, validation, what changed),
with each lossy pass's per-layer error drawn as an SVG bar chart beside it."""

from __future__ import annotations

import html
import os
from typing import Any


def markdown(report: dict[str, Any], chart_prefix: str) -> tuple[str, dict[str, str]]:
    """(the Markdown text, {chart file name: SVG text}); charts are named `chart_prefix.PASS.svg`."""
    lines = [f"# graphopt report: {os.path.basename(report.get('input') or 'model')}", ""]
    lines += [f"- pipeline: `{report.get('pipeline')}`", f"- output: `{report.get('output')}`",
              f"- nodes: {report['nodes_before']} -> {report['nodes_after']} in {report['seconds']:.2f} s"]
    val = report.get("validation")
    if val:
        if val.get("lossy"):
            acc = val["accuracy"]
            top1 = f", top-1 agreement {acc['top1_agreement']:.2f}%" if acc.get("top1_agreement") is not None else ""
            lines.append(f"- validation (lossy, against the input): cosine {acc['cosine']:.5f}{top1}"
                         f"{'; ' + '; '.join(val['problems']) if val['problems'] else ''}")
        else:
            lines.append(f"- validation: {'ok' if val['ok'] else 'FAILED'}, max abs error {val['max_abs']:.3g}, "
                         f"max rel error {val['max_rel']:.3g}")
    if report.get("rolled_back"):
        lines.append(f"- rolled back: {', '.join(report['rolled_back'])}")
    lines += [f"- **WARNING**: {_cell(w)}" for w in report.get("warnings") or ()]
    # one row per pass of the pipeline; the JSON report has each round under "rounds"
    lines += ["", "## Passes", "", "| # | pass | group | rounds | modified | node delta | seconds | stats |",
              "|---:|---|---|---:|---|---:|---:|---|"]
    for i, p in enumerate(report["passes"]):
        stats = ", ".join(f"{k}={v}" for k, v in p["stats"].items())
        stats = "; ".join(s for s in (stats, p.get("error") or "") if s)
        lines.append(f"| {i} | {_cell(p['label'])} | {p['group'] or ''} | {len(p['rounds'])} | "
                     f"{'yes' if p['modified'] else 'no'} | {p['node_delta']:+d} | {p['seconds']:.3f} | {_cell(stats)} |")
    diff = report.get("inspect_diff")
    if diff:
        lines += ["", "## What changed", "", "| | before | after |", "|---|---:|---:|"]
        for key in ("params", "macs", "flops", "weight_bytes", "peak_activation_bytes"):
            a, b = diff[key]
            lines.append(f"| {key} | {a} | {b} |")
        for op, (a, b) in diff["ops"].items():
            lines.append(f"| {op} nodes | {a} | {b} |")
    comparison = report.get("compare")
    if comparison:
        tools = list(comparison)
        lines += ["", "## Compared with other tools", "", "| | " + " | ".join(tools) + " |",
                  "|---|" + "---:|" * len(tools)]
        lines.append("| nodes | " + " | ".join(str(comparison[t].get("nodes", "failed")) for t in tools) + " |")
        lines.append("| seconds | " + " | ".join(str(comparison[t].get("seconds", "")) for t in tools) + " |")
        ops = sorted({op for t in tools for op in comparison[t].get("ops", {})})
        for op in ops:
            lines.append(f"| {op} | " + " | ".join(str(comparison[t].get("ops", {}).get(op, 0)) if "ops" in comparison[t]
                                                   else "" for t in tools) + " |")
        lines += [f"- {t} failed: {_cell(comparison[t]['error'])}" for t in tools if "error" in comparison[t]]
    eq = ((report.get("pass_reports") or {}).get("quantize-int8") or {}).get("equalization")
    if isinstance(eq, dict):
        lines += ["", "## quantize-int8: equalization", "",
                  f"- mode: `{eq.get('mode')}`; kept: {', '.join(eq.get('kept') or []) or 'none'}"]
        if eq.get("baseline") is not None:
            lines.append(f"- held-out channel-normalized cosine with every layer INT8: {eq['baseline']:.5f} without "
                         f"equalization, {eq.get('norm_cosine', eq['baseline']):.5f} with what was kept")
        if eq.get("note"):
            lines.append(f"- {_cell(eq['note'])}")
        lines += ["", "| equalization | applies | held-out normalized cosine | kept | seconds | detail |",
                  "|---|---|---:|---|---:|---|"]
        for t in eq.get("tried") or []:
            metric = f"{t['norm_cosine']:.5f}" if t.get("norm_cosine") is not None else ""
            detail = ", ".join(f"{k}={v}" for k, v in t.items()
                               if k not in ("name", "applies", "norm_cosine", "kept", "seconds"))
            lines.append(f"| {t['name']} | {'yes' if t.get('applies') else 'no'} | {metric} | "
                         f"{'yes' if t.get('kept') else 'no'} | {t.get('seconds', '')} | {_cell(detail)} |")
    charts: dict[str, str] = {}
    for name, details in (report.get("pass_reports") or {}).items():
        errors = details.get("layer_error") if isinstance(details, dict) else None
        if not errors:
            continue
        file = f"{os.path.basename(chart_prefix)}.{name}.svg"
        charts[file] = bar_chart(errors, f"{name}: relative error of each layer's output against float32")
        lines += ["", f"## {name}: per-layer error", "", f"![per-layer error of {name}](<{file}>)", "",
                  "| layer | relative error |", "|---|---:|"]
        lines += [f"| {_cell(layer)} | {e:.3g} |" for layer, e in errors.items()]
    return "\n".join(lines) + "\n", charts


def _cell(text: str) -> str:
    return html.escape(str(text), quote=False).replace("|", "\\|")


def bar_chart(values: dict[str, float], title: str) -> str:
    """A horizontal bar chart as SVG: one bar per entry, longest at full width."""
    bar_h, gap, label_w, plot_w = 16, 4, 320, 360
    top = 30
    height = top + len(values) * (bar_h + gap) + 10
    peak = max(values.values(), default=0.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 80}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             # an opaque background: on a dark theme, black text on a transparent chart vanishes
             '<rect x="0" y="0" width="100%" height="100%" fill="#ffffff"/>',
             f'<text x="4" y="16" font-size="13" fill="#000000">{html.escape(title)}</text>']
    for i, (label, value) in enumerate(values.items()):
        y = top + i * (bar_h + gap)
        short = label if len(label) <= 48 else "..." + label[-45:]
        width = max(1.0, plot_w * value / peak)
        parts += [f'<text x="{label_w - 6}" y="{y + bar_h - 4}" text-anchor="end">{html.escape(short)}</text>',
                  f'<rect x="{label_w}" y="{y}" width="{width:.1f}" height="{bar_h}" fill="#4a7ab5"/>',
                  f'<text x="{label_w + width + 4:.1f}" y="{y + bar_h - 4}">{value:.3g}</text>']
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
