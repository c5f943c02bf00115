"""Log lines written by a thread of their own: in order, all of them, after close too."""

from __future__ import annotations

import io
import os

from gateway.observability import BackgroundWriter


def test_lines_arrive_in_order_and_close_writes_everything() -> None:
    target = io.BytesIO()
    writer = BackgroundWriter(target)
    lines = [b"line %d\n" % i for i in range(5000)]
    for line in lines:
        assert writer.write(line) == len(line)
    writer.close()
    assert target.getvalue() == b"".join(lines)
    writer.write(b"after close\n")  # a later write starts a new thread
    writer.close()
    assert target.getvalue().endswith(b"after close\n")


def test_a_forked_child_logs_through_its_own_thread(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "log"
    with path.open("wb", buffering=0) as target:
        writer = BackgroundWriter(target)
        writer.write(b"parent\n")
        writer.close()
        pid = os.fork()
        if pid == 0:  # the child: the parent's thread does not exist here
            code = 0
            try:
                writer.write(b"child\n")
                writer.close()
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert path.read_bytes() == b"parent\nchild\n"
