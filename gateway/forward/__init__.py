"""Forwarding: moving accepted writes from the buffer to the upstreams (SPEC 6).

One loop per upstream reads the write-ahead log, batches per database, sends with the upstream's
HTTP client, decides what each answer means with the pure status table, and moves its cursor.
"""
