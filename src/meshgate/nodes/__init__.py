"""Many nodes on one store: node records and heartbeats, per-node status, placement."""
