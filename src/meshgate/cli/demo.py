"""`meshgate demo`: two demo backends and a 90/10 canary gateway, on the embedded store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from meshgate.cli.common import fail
from meshgate.errors import MeshgateError

INSTRUCTIONS = """\
meshgate demo: sava 1.0 on 127.0.0.1:8081, sava 1.1 on 127.0.0.1:8082,
gateway "sava" on port 9070 sending 90% to 1.0 and 10% to 1.1. In another terminal:

  for i in $(seq 100); do curl -s localhost:9070/; done | sort | uniq -c
  curl -s -A Firefox -b beta=1 localhost:9070/          # the condition: always 1.1
  .venv/bin/meshgate get gateways sava -o yaml            # status, routes, version

Press Ctrl-C to stop.
"""


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".meshgate-demo"),
    show_default=True,
    help="where the store and run files live",
)
@click.option("--api-port", default=7700, show_default=True, help="REST API port on 127.0.0.1")
def demo(data_dir: Path, api_port: int) -> None:
    """Run a single-node gateway with two demo backends and a canary between them."""
    from meshgate.demo import DEMO_MANIFEST, start_demo_backends
    from meshgate.node import NodeOptions, run_node

    try:
        backends = start_demo_backends()
    except OSError as exc:
        fail([f"cannot start the demo backends on ports 8081-8082: {exc}"])
    data_dir.mkdir(parents=True, exist_ok=True)
    manifest = data_dir / "demo.yaml"
    manifest.write_text(DEMO_MANIFEST)
    click.echo(INSTRUCTIONS)
    options = NodeOptions(data_dir=data_dir, api_port=api_port, manifests=[manifest])
    try:
        asyncio.run(run_node(options))
    except KeyboardInterrupt:
        pass
    except (MeshgateError, OSError) as exc:
        fail([f"meshgate demo: {exc}"])
    finally:
        for backend in backends:
            backend.shutdown()
