"""The durable buffer: record framing (record.py), the segment files (segmentfile.py), the
writer (segmentwriter.py) and log (segmentlog.py) with group commit, the in-memory tail that
spares consumers a read-back (tailcache.py), cursors (cursor.py), and the write-ahead log with
its consumers (wal.py)."""
