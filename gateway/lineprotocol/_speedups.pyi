"""Type stub of the C accelerator `_speedups.c` (see implementation.py)."""

INTERFACE_VERSION: int

def scan_plain(
    body: bytes,
    pos: int,
    policy: tuple[int, int, int, int, int, int, int, bytes, int],
    /,
) -> tuple[int, int, int, int, int, bytes | None, int | None]:
    """Accept the plain, valid lines of `body` from `pos` on; stop where Python must look."""
