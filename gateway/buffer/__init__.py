"""The durable buffer: record framing (record.py) and the segmented append-only log."""
