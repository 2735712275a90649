"""``denoise prepare``: job, per-file worker, resume records, out-dir lifecycle, finalize, run,
merge (see docs/architecture.md)."""
