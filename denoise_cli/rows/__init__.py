"""Token stream -> model rows, pure numpy: chunking, the denoisers, packing (see
docs/architecture.md)."""
