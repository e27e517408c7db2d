"""Running meshgate as a daemon: one process per data dir."""
