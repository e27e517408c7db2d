"""Instances that come and go at run time: registered through the API (with leases), or
resolved from DNS names that services follow."""
