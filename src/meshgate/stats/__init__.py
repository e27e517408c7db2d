"""Per-route statistics of the data plane: counters, rates and latency percentiles.

Pure modules: `counters` (totals that survive reloads and restarts, rates), `histogram` (fixed
logarithmic latency buckets), `logline` (the request-log line HAProxy writes and its parser),
`latency` (histograms and line counts per backend and server, windows, sampling), `sampling`
(the share of requests HAProxy logs, from the request rate), `tally` (from `show stat` rows of
every HAProxy process to a snapshot) and `view` (the JSON of the stats API). I/O shells:
`collector` (polls HAProxy), `keeper` (sets HAProxy's share of requests logged), `logs`
(receives HAProxy's log stream), `prometheus` (the /metrics families) and `accesslog` (JSON lines
for people). Reading HAProxy's counters is
`meshgate.haproxy.stats_reader`'s job.

This package's `__init__` imports nothing, so the compiler can use `logline` cheaply.
"""
