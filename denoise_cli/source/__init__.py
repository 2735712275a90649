"""Files -> documents -> token stream: input discovery, decompression, JSONL records, the
tokenizer, and the one read -> encode -> join loop (see docs/architecture.md)."""
