"""The dependency graph (`GET /api/v1/graph`) as text: a tree per gateway, or Graphviz DOT.
Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

SHAPES = {"gateway": "box", "service": "ellipse", "node": "component", "external": "diamond"}


def _figures(edge: Mapping[str, Any]) -> str:
    rate = float(edge.get("rate") or 0.0)
    parts = [f"{rate:.1f}/s"]
    ratio = edge.get("error_ratio")
    if ratio is not None:
        parts.append(f"errors {100 * float(ratio):.1f}%")
    if edge.get("p99_ms") is not None:
        parts.append(f"p99 {edge['p99_ms']}ms")
    return "  ".join(parts)


def _label(node: Mapping[str, Any] | None, fallback: str) -> str:
    if node is None:
        return fallback
    name = str(node.get("name"))
    return name if node.get("kind") == "external" else f"{node.get('kind')} {name}"


def _branch(items: Sequence[str], indent: str) -> list[str]:
    lines = []
    for position, item in enumerate(items):
        last = position == len(items) - 1
        lines.append(f"{indent}{'└── ' if last else '├── '}{item}")
    return lines


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def tree(graph: Mapping[str, Any]) -> str:
    """Each gateway with its callers (traffic) and its routes (configuration, with traffic)."""
    nodes = {str(n["id"]): n for n in graph.get("nodes") or []}
    edges = list(graph.get("edges") or [])
    window = graph.get("window_s")
    span = graph.get("span_s")
    title = "dependency graph"
    if graph.get("flows"):
        title += f", callers over the last {window:g}s" if window is not None else ""
        if span is not None:
            title += f" ({float(span):.0f}s recorded)"
    else:
        title += " (callers not recorded: all traffic shown as external)"
    lines = [title]
    gateways = sorted(
        (n for n in nodes.values() if n.get("kind") == "gateway"),
        key=lambda n: (str(n.get("namespace")), str(n.get("name"))),
    )
    if not gateways:
        return "\n".join([*lines, "(no gateways)"])
    for gateway in gateways:
        gid = str(gateway["id"])
        port = f"  :{gateway['port']}" if gateway.get("port") else ""
        lines.append("")
        lines.append(f"gateway {gateway.get('namespace')}/{gateway.get('name')}{port}")
        callers = [e for e in edges if e.get("target") == gid and e.get("route") is None]
        routes = [e for e in edges if e.get("source") == gid and e.get("route") is not None]
        caller_rows = [
            [_label(nodes.get(str(e["source"])), str(e["source"])), _figures(e)] for e in callers
        ]
        route_rows = [
            [
                str(e["route"]),
                f"{e.get('weight')}%" if e.get("weight") is not None else "-",
                "→ " + _label(nodes.get(str(e["target"])), str(e["target"])),
                _figures(e),
            ]
            for e in routes
        ]
        caller_lines = _columns(caller_rows) or ["(no traffic)"]
        route_lines = _columns(route_rows) or ["(no routes)"]
        lines.append("├── callers")
        lines += _branch(caller_lines, "│   ")
        lines.append("└── routes")
        lines += _branch(route_lines, "    ")
    return "\n".join(lines)


def _quoted(text: str) -> str:
    return json.dumps(text)  # a DOT string: double quotes, backslash escapes


def dot(graph: Mapping[str, Any]) -> str:
    """Graphviz DOT: `meshgate graph -o dot | dot -Tsvg > graph.svg`."""
    lines = ["digraph meshgate {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for node in graph.get("nodes") or []:
        kind = str(node.get("kind"))
        label = f"{kind}\\n{node.get('name')}"
        if node.get("namespace") and kind != "node":
            label += f"\\n({node.get('namespace')})"
        shape = SHAPES.get(kind, "box")
        lines.append(f'  {_quoted(str(node["id"]))} [label="{label}", shape={shape}];')
    for edge in graph.get("edges") or []:
        words = []
        if edge.get("route") is not None:
            words.append(f"{edge['route']} {edge.get('weight')}%")
        words.append(_figures(edge))
        label = "\\n".join(w.replace('"', "'") for w in words)
        style = "" if edge.get("route") is not None else ", style=dashed"
        lines.append(
            f"  {_quoted(str(edge['source']))} -> {_quoted(str(edge['target']))} "
            f'[label="{label}"{style}];'
        )
    lines.append("}")
    return "\n".join(lines)
