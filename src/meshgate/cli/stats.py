"""`meshgate stats [GATEWAY] [--watch]`: per-route traffic as a table, once or live."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import click

from meshgate.cli.common import client_options, open_client
from meshgate.cli.remote import reporting
from meshgate.client import MeshgateClient

HEADER = [
    "ROUTE", "RATE/S", "REQUESTS", "2XX", "4XX", "5XX", "ERR%", "P50", "P99", "SAMPLED", "UP",
]  # fmt: skip


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value}ms"


def _error_percent(route: dict[str, Any]) -> str:
    """Server errors (5xx) among the requests counted so far."""
    requests = int(route.get("requests") or 0)
    if not requests:
        return "-"
    errors = int((route.get("responses") or {}).get("5xx") or 0)
    return f"{100 * errors / requests:.1f}%"


def _sampled(route: dict[str, Any]) -> str:
    """The share of the latency window's requests the percentiles come from."""
    ratio = (route.get("sampling") or {}).get("ratio")
    if ratio is None:
        return "-"
    return f"{100 * float(ratio):.0f}%" if ratio >= 0.01 else f"{100 * float(ratio):.2f}%"


def route_row(name: str, route: dict[str, Any]) -> list[str]:
    responses = route.get("responses") or {}
    latency = route.get("latency_ms") or {}
    instances = route.get("instances") or []
    up = sum(1 for instance in instances if instance.get("status") == "UP")
    return [
        name,
        f"{float(route.get('rate') or 0):.1f}",
        str(route.get("requests", 0)),
        str(responses.get("2xx", 0)),
        str(responses.get("4xx", 0)),
        str(responses.get("5xx", 0)),
        _error_percent(route),
        _ms(latency.get("p50")),
        _ms(latency.get("p99")),
        _sampled(route),
        f"{up}/{len(instances)}",
    ]


def stats_table(stats: dict[str, Any]) -> str:
    """One gateway's stats: a title line, then one aligned row per route."""
    title = f"gateway {stats.get('namespace', 'default')}/{stats.get('gateway', '')}"
    routes = stats.get("routes") or {}
    if not routes:
        return f"{title}\n  (no routes served)"
    rows = [HEADER] + [route_row(name, route) for name, route in routes.items()]
    return "\n".join([title, *aligned(rows)])


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of aligned columns: names left-aligned, figures right-aligned, as in any
    table of numbers."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


COMPARE_HEADER = ["ROUTE", "REQUESTS", "SUCCESS", "95% INTERVAL", "P50", "P99"]


def comparison_text(comparison: dict[str, Any]) -> str:
    """Per-route figures as a table, then each pair's verdicts."""
    title = (
        f"gateway {comparison.get('namespace', 'default')}/{comparison.get('gateway', '')}, "
        f"last {comparison.get('window_s', 0):g}s"
    )
    rows = [COMPARE_HEADER]
    for name, route in (comparison.get("routes") or {}).items():
        rate = route.get("success_rate")
        interval = route.get("success_rate_95")
        rows.append(
            [
                name,
                str(route.get("requests", 0)),
                "-" if rate is None else f"{100 * rate:.2f}%",
                "-" if not interval else f"{100 * interval[0]:.2f}-{100 * interval[1]:.2f}%",
                _ms(route.get("p50_ms")),
                _ms(route.get("p99_ms")),
            ]
        )
    lines = aligned(rows)
    for pair in comparison.get("pairs") or []:
        lines.append(f"{pair['a']} vs {pair['b']}:")
        lines.append(f"  errors:  {pair['error_rate']['verdict']}")
        lines.append(f"  latency: {pair['latency']['verdict']}")
    return "\n".join([title, *lines])


def _gateway_names(client: MeshgateClient, gateway: str | None, namespace: str) -> Sequence[str]:
    if gateway is not None:
        return [gateway]
    return [str(item["name"]) for item in client.list("gateways", namespace=namespace)]


def render_all(client: MeshgateClient, gateway: str | None, namespace: str) -> str:
    names = _gateway_names(client, gateway, namespace)
    if not names:
        return f"no gateways in namespace {namespace}"
    tables = [stats_table(client.gateway_stats(name, namespace=namespace)) for name in names]
    return "\n\n".join(tables)


@click.command()
@click.argument("gateway", required=False)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-w", "--watch", is_flag=True, help="refresh every second until interrupted")
@click.option(
    "--compare", is_flag=True, help="compare GATEWAY's routes: success rates, latency, verdicts"
)
@click.option(
    "--window", default="5m", show_default=True, help="with --compare: how far back to look"
)
@client_options
def stats(
    gateway: str | None,
    namespace: str,
    watch: bool,
    compare: bool,
    window: str,
    server: str | None,
    token: str | None,
) -> None:
    """Per-route traffic of GATEWAY (all gateways when omitted): rate, requests, response
    classes, server error share, latency percentiles, instances up. With --compare, an A/B
    comparison of GATEWAY's routes over the last --window."""
    if compare and gateway is None:
        raise click.UsageError("--compare needs a GATEWAY")
    with reporting(), open_client(server, token) as client:
        if compare:
            assert gateway is not None
            click.echo(comparison_text(client.compare(gateway, window=window, namespace=namespace)))
            return
        if not watch:
            click.echo(render_all(client, gateway, namespace))
            return
        try:
            while True:
                text = render_all(client, gateway, namespace)
                click.clear()
                click.echo(text)
                time.sleep(1.0)
        except KeyboardInterrupt:
            return
