"""The benchmark harness (see bench/README.md): payload, sink, wrk script, runner, report."""
