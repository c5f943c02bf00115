"""The benchmark's Markdown report: one table of cases, one of ratios, and notes."""

from __future__ import annotations

from typing import Any


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f} M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.0f} k"
    return f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}"


def delivered(r: dict[str, Any]) -> float:
    """Lines/s the sink received while the load ran (what the server forwarded meanwhile), per
    copy: a gateway fanning out to N upstreams that are all the sink delivers each line N times."""
    per_second = float(r["delivered_lines_during_load"]) / float(r["duration_s"])
    return per_second / int(r.get("copies", 1))


def _drained(r: dict[str, Any]) -> str:
    drain_s = r.get("gateway", {}).get("drain_s")
    if drain_s is None:
        return "the sink did not get every line within the drain timeout"
    return f"every line delivered {drain_s} s after it answered again"


def _by(results: list[dict[str, Any]], encoding: str, case: str) -> dict[str, Any] | None:
    for r in results:
        if r["encoding"] == encoding and r["case"] == case:
            return r
    return None


def best_runs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per encoding and case, the run with the most lines/s (the least disturbed one)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        key = (r["encoding"], r["case"])
        if key not in best or r["lines_per_s"] > best[key]["lines_per_s"]:
            best[key] = r
    return list(best.values())


def markdown(report: dict[str, Any]) -> str:
    """The whole report."""
    env = report["environment"]
    options = report["options"]
    every_run = report["results"]
    results = best_runs(every_run)
    payload = env["payload"]
    sizes = payload["bytes"]
    lines = payload["lines"]
    out = [
        f"## influx-gateway benchmark, {env['date']}",
        "",
        f"`{report['command']}`",
        "",
        f"- machine: {env['cpu']}, {env['cores']} cores, Linux {env['kernel']}, "
        f"load average at start {' '.join(env['load_average'])}",
        f"- {env['wrk']}; {env['nginx'] or 'no nginx'}; {env['python']}; "
        f"influx-gateway {env['gateway_version'].split()[-1]} (commit {env['commit']}"
        + (", with uncommitted changes in gateway/" if env.get("gateway_dirty") else "")
        + ")",
        f"- payload: {lines} Telegraf-like lines per request, {sizes['batch.lp'] / 1e6:.2f} MB "
        f"plain / {sizes['batch.lp.gz'] / 1e6:.2f} MB gzip "
        f"({sizes['batch.lp'] / lines:.0f} bytes per line)"
        + (", a unique batch id per request" if options["unique_ids"] else ""),
        f"- load: wrk, {options['duration']:g} s per case, {options['connections']} connections, "
        f"{options['threads']} threads; /ping: 1 connection, one request every 10 ms",
        f'- influx-gateway: fsync = "{options.get("gateway_fsync", "always")}", full validation, '
        f"one upstream (api v2, gzip "
        f"{'on' if options['upstream_gzip'] else 'off'}) = the sink; data dir on "
        f"{env['data_dir_fs']}"
        + (f"; --workers {options['gateway_workers']}" if options["gateway_workers"] else "")
        + (
            f"; validation_nice = {options['gateway_validation_nice']}"
            if options.get("gateway_validation_nice") is not None
            else ""
        ),
        f"- nginx: worker_processes {options['nginx_workers']}, proxy_pass with keepalive; "
        f"sink: {options['sink_workers']} process(es)",
        *(
            [f"- every case ran {options['repeat']} times, interleaved; the tables show the best"]
            if options["repeat"] > 1
            else []
        ),
        "",
        "| body | server | lines/s | delivered lines/s | p50 ms | p99 ms | non-204 | CPU s "
        "| CPU µs/line | peak RSS MB | /ping p50 ms | /ping p99 ms | sink got all acked lines |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        delivery = r["delivery"]
        verdict = delivery["status"]
        if r.get("gateway"):
            verdict += f" (after {r['gateway']['drain_s']} s drain)"
        out.append(
            f"| {r['encoding']} | {r['target']} | {_num(r['lines_per_s'])} "
            f"| {_num(delivered(r))} "
            f"| {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p99']:.1f} | {r['non_204']} "
            f"| {r['server_cpu_s']:.1f} | {_num(r['server_cpu_us_per_line'], 2)} "
            f"| {r['peak_rss_mb']:.0f} | {r['ping']['latency_ms']['p50']:.2f} "
            f"| {r['ping']['latency_ms']['p99']:.2f} | {verdict} |"
        )

    encodings = list(dict.fromkeys(r["encoding"] for r in results))
    ratio_rows = []
    for encoding in encodings:
        gateway = _by(results, encoding, "gateway")
        if gateway is None:
            continue
        others = [  # the stalled-upstream case measures absorbing an outage: nothing to compare
            r
            for r in results
            if r["encoding"] == encoding and r["case"] not in ("gateway", "gateway-outage")
        ]
        for other in others:
            cells = [
                _ratio(gateway["lines_per_s"], other["lines_per_s"]),
                _ratio(delivered(gateway), delivered(other)),
                _ratio(gateway["server_cpu_us_per_line"], other["server_cpu_us_per_line"]),
                _ratio(gateway["ping"]["latency_ms"]["p99"], other["ping"]["latency_ms"]["p99"]),
            ]
            ratio_rows.append(f"| {encoding} | gateway / {other['target']} | {' | '.join(cells)} |")
    if ratio_rows:
        out += [
            "",
            "| body | ratio | lines/s | delivered lines/s | CPU per line | /ping p99 |",
            "|---|---|--:|--:|--:|--:|",
            *ratio_rows,
        ]

    for encoding in encodings:
        stalled = _by(results, encoding, "gateway-outage")
        if stalled is not None:
            out += [
                "",
                f"Upstream stalled ({encoding}): {_num(stalled['lines_per_s'])} lines/s "
                "acknowledged into the buffer while the upstream took connections but never "
                f"answered; {_drained(stalled)}.",
            ]
    for encoding in encodings:
        one, two = _by(results, encoding, "gateway"), _by(results, encoding, "gateway-fanout")
        if one is None or two is None:
            continue
        out += [
            "",
            f"Fan-out ({encoding}): two upstreams instead of one cost "
            f"{_ratio(two['server_cpu_us_per_line'], one['server_cpu_us_per_line'])}x the CPU "
            f"per line and reach {_ratio(two['lines_per_s'], one['lines_per_s'])}x the lines/s "
            "(SPEC 9: the cost of a second upstream at most 1.3x).",
        ]

    half = [r for r in results if r.get("half_load")]
    if half:
        out += [
            "",
            "Latency at about half of each server's peak rate (the same connections, a pause "
            "between requests; SPEC 9: p99 ≤ 25 ms for the gateway):",
            "",
            "| body | server | lines/s | share of peak | pause ms | p50 ms | p99 ms | non-204 |",
            "|---|---|--:|--:|--:|--:|--:|--:|",
        ]
        for r in half:
            h = r["half_load"]
            out.append(
                f"| {r['encoding']} | {r['target']} | {_num(h['lines_per_s'])} "
                f"| {h['fraction_of_peak']:.2f} | {h['interval_ms']} "
                f"| {h['latency_ms']['p50']:.1f} | {h['latency_ms']['p99']:.1f} | {h['non_204']} |"
            )

    notes = []
    if options["repeat"] > 1:
        for r in results:
            runs = [
                x for x in every_run if (x["encoding"], x["case"]) == (r["encoding"], r["case"])
            ]
            spread = ", ".join(_num(x["lines_per_s"]) for x in runs)
            notes.append(f"{r['target']} ({r['encoding']}): lines/s of each run: {spread}")
        for x in every_run:
            for problem in x["delivery"]["problems"]:
                notes.append(f"{x['target']} ({x['encoding']}, run {x['run']}): **{problem}**")
    for r in results:
        name = f"{r['target']} ({r['encoding']})"
        if r["non_204"]:
            notes.append(f"{name}: responses by status {r['statuses']}")
        errors = {k: v for k, v in r["socket_errors"].items() if v}
        if errors:
            notes.append(f"{name}: wrk socket errors {errors}")
        ping_bad = {k: v for k, v in r["ping"]["statuses"].items() if k != "204"}
        if ping_bad:
            notes.append(f"{name}: health path answered {ping_bad}")
        gateway = r.get("gateway")
        if gateway:
            notes.append(
                f"{name}: accepted {gateway['accepted_lines']} lines; "
                f"{gateway['backlog_lines_at_end']} not yet forwarded when the load stopped, "
                f"delivered {gateway['drain_s']} s later using {gateway['cpu_s_after_load']} "
                "CPU s more"
            )
        if options["repeat"] == 1:
            for problem in r["delivery"]["problems"]:
                notes.append(f"{name}: **{problem}**")
        if r.get("peak_pss_mb"):
            notes.append(
                f"{name}: peak PSS {r['peak_pss_mb']:.0f} MB (sampled every 0.5 s; shared pages "
                f"split between processes), peak RSS summed {r['peak_rss_mb']:.0f} MB"
            )
        duplicates = r["delivery"].get("duplicate_batches", 0) - (r.get("copies", 1) - 1) * (
            r["acked_requests"] + r.get("half_load", {}).get("acked_requests", 0)
        )
        if duplicates > 0:
            notes.append(f"{name}: {duplicates} batches delivered more than once per upstream")
        share = r["foreign_cpu_s"] / r["machine_capacity_s"] if r["machine_capacity_s"] else 0
        unattributed = max(0.0, r["other_cpu_s"] - r["foreign_cpu_s"])
        notes.append(
            f"{name}: CPU s: server {r['server_cpu_s']}, sink {r['sink_cpu_s']}, "
            f"wrk {r['loadgen_cpu_s']}, other processes {r['foreign_cpu_s']}, "
            f"unattributed (kernel, short-lived processes) {unattributed:.1f} "
            f"(of {r['machine_capacity_s']})"
            + (" **machine shared: numbers are noisy**" if share > 0.1 else "")
            + (
                "; busiest others: " + ", ".join(f"{n} {s} s" for n, s in r["busiest_others"])
                if r["busiest_others"]
                else ""
            )
        )
    if notes:
        out += ["", *[f"- {note}" for note in notes]]
    return "\n".join(out) + "\n"
