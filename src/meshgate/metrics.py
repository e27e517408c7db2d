"""The control plane's own Prometheus metrics: reconciles, reloads, runtime commands, rejections.

Each node owns a registry (not the process-global default), so several nodes in one process,
as in tests, never share counters.
"""

from __future__ import annotations

import asyncio
import datetime
import platform
from collections.abc import Callable, Iterable

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from meshgate import __version__
from meshgate.model.certificate import Certificate

# A `_created` series per counter and histogram doubles the series for a value Prometheus does
# not use (and that is the scrape's own time for the data-plane series, which meshgate builds).
disable_created_metrics()  # type: ignore[no-untyped-call]


class ControlPlaneMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        Info("meshgate_build", "The running meshgate", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version()}
        )
        # process_cpu_seconds_total, process_resident_memory_bytes, ... of meshgate itself.
        ProcessCollector(registry=self.registry)
        self.reconciles = Counter(
            "meshgate_reconciles_total",
            "Reconcile passes, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "meshgate_reconcile_duration_seconds",
            "Time from reading the store to HAProxy obeying",
            registry=self.registry,
        )
        self.reloads = Counter(
            "meshgate_haproxy_reloads_total", "HAProxy reloads and starts", registry=self.registry
        )
        self.gateways_compiled = Counter(
            "meshgate_gateways_compiled_total",
            "Gateways compiled by reconcile passes, or given new servers (a change's compile "
            "work: a gateway the change does not concern is reused as it was)",
            registry=self.registry,
        )
        self.runtime_commands = Counter(
            "meshgate_runtime_commands_total",
            "Changes applied through the runtime API",
            registry=self.registry,
        )
        self.status_writes = Counter(
            "meshgate_status_writes_total",
            "Status records written or deleted in the store (only those that changed)",
            registry=self.registry,
        )
        self.rejected = Counter(
            "meshgate_rejected_changes_total",
            "Gateways left out of the data plane because they could not be served",
            registry=self.registry,
        )
        self.gateways = Gauge(
            "meshgate_gateways",
            "Gateways, by whether the data plane serves them",
            ["state"],
            registry=self.registry,
        )

        self.certificate_expiry = Gauge(
            "meshgate_certificate_expiry_seconds",
            "Seconds until the certificate expires (negative once it has); read at scrape time",
            ["namespace", "certificate"],
            registry=self.registry,
        )
        self._certificates: set[tuple[str, str]] = set()

    def set_certificate_expiry(self, certificates: Iterable[Certificate]) -> None:
        """One series per stored certificate; the value is computed when scraped, so it
        keeps counting down between reconciles."""
        current: set[tuple[str, str]] = set()
        for certificate in certificates:
            labels = (certificate.namespace, certificate.name)
            current.add(labels)
            self.certificate_expiry.labels(*labels).set_function(
                _seconds_until(certificate.info.not_after)
            )
        for gone in self._certificates - current:
            self.certificate_expiry.remove(*gone)
        self._certificates = current

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _seconds_until(end: datetime.datetime) -> Callable[[], float]:
    return lambda: (end - datetime.datetime.now(datetime.UTC)).total_seconds()


def metrics_router(metrics: ControlPlaneMetrics) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        # With a thousand routes carrying traffic a scrape formats ~90,000 lines (0.75 s): in a
        # thread, so the event loop, which applies changes to HAProxy, keeps its turns.
        body = await asyncio.to_thread(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
