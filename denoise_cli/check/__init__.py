"""Reading an output back: verify, row checks, stats, inspect, reports (see docs/architecture.md)."""
