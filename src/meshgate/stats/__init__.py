"""Per-route statistics of the data plane: counters, rates and latency percentiles.

Pure modules: `counters` (totals that survive reloads and restarts, rates), `histogram` (fixed
logarithmic latency buckets), `logline` (the access-log line HAProxy writes and its parser),
`latency` (histograms per route and instance, windows, sampling) and `view` (the JSON of the
stats API). I/O shells: `collector` (polls HAProxy), `logs` (receives HAProxy's log stream),
`prometheus` (the /metrics families) and `accesslog` (JSON lines for people).

This package's `__init__` imports nothing, so the compiler can use `logline` cheaply.
"""
