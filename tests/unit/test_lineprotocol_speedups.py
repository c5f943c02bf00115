"""The C accelerator (`_speedups`) against the pure-Python reference: identical results, always.

`validate(..., implementation="c")` and `validate(..., implementation="python")` must agree on
every field of the result, on the output bytes, and on whether the input object itself is
returned. Proven on the whole corpus in several surroundings, on generated Telegraf-like bodies
with random mutations, on random bytes, on every prefix of a body, and against the exact parser
alone (the pure-Python bulk path switched off). The rest of the line protocol suite runs once
per implementation (see conftest.py).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import LineProtocolBodyError
from gateway.lineprotocol import (
    NS_PER_UNIT,
    PRECISIONS,
    Precision,
    TimeRules,
    fastpath,
    implementation,
    validate,
)
from gateway.lineprotocol.implementation import Implementation
from tests.unit.lp_corpus import INVALID, NOW, VALID, T

pytestmark = pytest.mark.skipif(
    "c" not in implementation.AVAILABLE,
    reason="the C accelerator is not built (no C compiler when the package was installed)",
)

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
RULES = [
    TimeRules(),
    TimeRules(guard=False),
    TimeRules(round_to_ns=10**9),
    TimeRules(guard=False, round_to_ns=7),
    TimeRules(guard=False, round_to_ns=60 * 10**9),
    TimeRules(max_future_ns=0, min_time_ns=NOW - 10**9),
    TimeRules(min_time_ns=INT64_MAX + 1),  # nothing passes the guard
    TimeRules(max_future_ns=-(2**65)),  # nor here, from the other side
]
Outcome = tuple[object, ...]


def outcome(
    body: bytes, precision: Precision, which: Implementation | None, **options: object
) -> Outcome:
    """The result of one implementation (and whether it is the input object), or its error."""
    try:
        result = validate(body, precision, now_ns=NOW, implementation=which, **options)  # type: ignore[arg-type]
    except LineProtocolBodyError as error:
        return ("body error", str(error))
    return (result, result.body is body)


def exact_outcome(body: bytes, precision: Precision, **options: object) -> Outcome:
    """The pure-Python result with its bulk paths switched off: the exact parser alone."""
    never = re.compile(rb"(?!)")
    with (
        mock.patch.object(fastpath, "PLAIN_LINES", never),
        mock.patch.object(fastpath, "BLANK_LINES", never),
    ):
        return outcome(body, precision, "python", **options)


def assert_same(body: bytes, precision: Precision = "ns", **options: object) -> Outcome:
    """C and pure Python decide `body` identically; the common outcome."""
    expected = outcome(body, precision, "python", **options)
    assert expected == outcome(body, precision, "c", **options)
    return expected


# --- selection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "requested"),
    [("1", True), ("true", True), (" YES ", True), ("0", False), ("", False), ("no", False)],
)
def test_pure_python_variable_values(value: str, requested: bool) -> None:
    """INFLUX_GATEWAY_PURE_PYTHON asks for pure Python with 1/true/yes/on only."""
    environ = {implementation.PURE_PYTHON_VARIABLE: value}
    assert requested == implementation.pure_python_requested(environ)


@pytest.mark.parametrize(("value", "expected"), [("1", "python"), ("0", "c")])
def test_environment_selects_implementation_at_import(value: str, expected: str) -> None:
    """A fresh interpreter reports the implementation the environment asked for."""
    environ = {**os.environ, implementation.PURE_PYTHON_VARIABLE: value}
    code = "import gateway.lineprotocol as lp; print(lp.IMPLEMENTATION)"
    output = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    assert expected == output.stdout.strip()


def test_python_implementation_never_calls_c() -> None:
    """implementation="python" does not touch the accelerator."""
    with mock.patch.object(implementation, "COMPILED_SCAN", None):
        result = validate(b"m f=1 " + T + b"\n", "ns", now_ns=NOW, implementation="python")
    assert 1 == result.accepted


def test_c_implementation_missing_is_an_error() -> None:
    """Asking for C where it is not built says so instead of silently using Python."""
    with (
        mock.patch.object(implementation, "COMPILED_SCAN", None),
        pytest.raises(RuntimeError, match="not built"),
    ):
        validate(b"m f=1\n", "ns", now_ns=NOW, implementation="c")


# --- the corpus, in several surroundings ----------------------------------------------------

_CORPUS = [(name, line) for name, line, _ in VALID] + [(name, line) for name, line, _ in INVALID]
_GOOD = b"cpu,host=a usage_user=1.5,usage_idle=97i " + T


@pytest.mark.parametrize(("name", "line"), _CORPUS, ids=[name for name, _ in _CORPUS])
@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"%s\n", id="alone"),
        pytest.param(b"%s", id="no-newline"),
        pytest.param(b"%s\r\n", id="crlf"),
        pytest.param(_GOOD + b"\n%s\n" + _GOOD + b"\n", id="between-good-lines"),
        pytest.param(_GOOD + b"\n" + _GOOD + b"\n%s", id="last-without-newline"),
        pytest.param(b"# comment\n\n%s\n%s\n", id="twice-after-blanks"),
    ],
)
def test_corpus_line_decided_identically(name: str, line: bytes, frame: bytes) -> None:
    """Every corpus line, in every frame: C and Python agree on everything."""
    body = frame.replace(b"%s", line)
    assert_same(body)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("rules", RULES, ids=[str(index) for index in range(len(RULES))])
def test_corpus_decided_identically_in_every_precision_and_rule(
    precision: Precision, rules: TimeRules
) -> None:
    """The corpus as one body, per precision and time rule set: C and Python agree."""
    unit_now = str(NOW // NS_PER_UNIT[precision]).encode()
    lines = [line.replace(T, unit_now) for _, line in _CORPUS]
    body = b"\n".join(line for line in lines if b'"' not in line or line.count(b'"') % 2 == 0)
    assert_same(body, precision, rules=rules)
    assert_same(body, precision, rules=rules, max_line_bytes=40, max_errors=3)


def _spellings(word: str) -> set[str]:
    """Every upper/lower-case spelling of every prefix of `word`, and the word plus a letter."""
    found = {word + "e"}
    for size in range(1, len(word) + 1):
        prefix = word[:size]
        for mask in range(2**size):
            found.add("".join(c.upper() if mask >> i & 1 else c for i, c in enumerate(prefix)))
    return found


@pytest.mark.parametrize("word", sorted(_spellings("true") | _spellings("false")))
def test_boolean_spellings_decided_identically(word: str) -> None:
    """Every case spelling of true/false and their prefixes: C and Python agree."""
    token = word.encode()
    assert_same(b"m b=%s %s\nm b=%s,c=1 %s\nm b=%s\n" % (token, T, token, T, token))


_EDGE_STAMPS = [
    0,
    1,
    -1,
    -7,
    10**18 + 3,
    -(10**18) - 3,
    INT64_MAX,
    INT64_MAX + 1,
    INT64_MIN,
    INT64_MIN - 1,
    2**64 - 1,
    2**64 + 1,
    10**19,
    10**20 - 1,
    -(10**20) + 1,
    NOW + 123_456_789,
    -(NOW + 123_456_789),
]
_ROUNDING = [
    TimeRules(guard=False),
    TimeRules(guard=False, round_to_ns=7),
    TimeRules(guard=False, round_to_ns=1_500_000_000),
    TimeRules(round_to_ns=7),
]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("rules", _ROUNDING, ids=["plain", "7ns", "1500ms", "guarded-7ns"])
def test_timestamp_edges_decided_identically(precision: Precision, rules: TimeRules) -> None:
    """Timestamps at int64/uint64 edges, negative, 20 digits, rounded: C and Python agree."""
    unit = NS_PER_UNIT[precision]
    stamps = [*_EDGE_STAMPS, *(value // unit for value in _EDGE_STAMPS)]
    body = b"".join(b"m f=1 %d\nm f=1 0%d\n" % (stamp, stamp) for stamp in stamps)
    assert_same(body, precision, rules=rules)
    for stamp in stamps:
        assert_same(b"m f=1 %d\n" % stamp, precision, rules=rules)


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        pytest.param(b"#m f=1 " + T + b"\n", 0, id="comment-like-a-line"),
        pytest.param(b"m f=1 " + T + b"\n#m,t=a f=1i " + T + b"\n", 1, id="after-a-line"),
        pytest.param(b"#m f=1\nm f=1", 1, id="comment-without-timestamp"),
    ],
)
def test_comment_lines_that_parse_as_lines_stay_comments(body: bytes, accepted: int) -> None:
    """A `#` line is a comment even when the rest would be a valid line."""
    result, _ = assert_same(body)
    assert accepted == result.accepted  # type: ignore[attr-defined]


# --- generated Telegraf-like bodies with mutations -----------------------------------------

_MEASUREMENTS = ["cpu", "mem", "disk", "diskio", "net", "system", "m", "é", "c#", "#cpu"]
_TAGS = [
    ("host", "web-001.example.com"),
    ("cpu", "cpu-total"),
    ("device", "sda1"),
    ("path", "/var/lib/docker"),
    ("interface", "eth0"),
    ("f", "x"),
]
_FIELD_KEYS = ["usage_user", "usage_idle", "free", "used_percent", "uptime", "up", "load1", "f"]
_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: repr(x).encode()),
    st.integers(-(2**64), 2**64).map(lambda n: b"%di" % n),
    st.integers(-1, 2**65).map(lambda n: b"%du" % n),
    st.sampled_from(
        [
            b"1",
            b"-0",
            b"01.50",
            b"1e400",
            b"1E-5",
            b"1.5e+3",
            b"00000000000000000000009i",
            b"-9223372036854775808i",
            b"-09223372036854775809i",
            b"018446744073709551615u",
            b'"3 days, 4:05"',
            b'""',
            b'"a=b,c d"',
            b"t",
            b"T",
            b"true",
            b"True",
            b"TRUE",
            b"f",
            b"F",
            b"false",
            b"False",
            b"FALSE",
        ]
    ),
)
_OFFSETS = st.one_of(st.integers(-5, 5), st.integers(-(10**12), 10**12))


@st.composite
def timestamps(draw: st.DrawFn, precision: Precision) -> bytes:
    """A timestamp token: mostly now-ish in the precision, sometimes anything."""
    unit_now = NOW // NS_PER_UNIT[precision]
    kind = draw(st.integers(0, 9))
    if kind <= 5:
        return b" %d" % (unit_now + draw(_OFFSETS))
    if kind == 6:
        return b""
    if kind == 7:
        return b" %d" % draw(st.integers(INT64_MIN - 2, INT64_MAX + 2))
    if kind == 8:
        return b" " + b"0" * draw(st.integers(1, 25)) + str(unit_now).encode()
    return b" " + draw(
        st.sampled_from([b"-0", b"0", b"-9223372036854775808", b"9" * 25, b"-", b"1.5", b"x"])
    )


@st.composite
def telegraf_line(draw: st.DrawFn, precision: Precision) -> bytes:
    """A Telegraf-like line, valid more often than not."""
    line = draw(st.sampled_from(_MEASUREMENTS)).encode()
    for key, value in draw(st.lists(st.sampled_from(_TAGS), max_size=3)):
        line += b",%s=%s" % (key.encode(), value.encode())
    keys = draw(st.lists(st.sampled_from(_FIELD_KEYS), min_size=1, max_size=6))
    line += b" " + b",".join(b"%s=%s" % (key.encode(), draw(_VALUES)) for key in keys)
    return line + draw(timestamps(precision))


_INSERTS = [
    b"\\",
    b'"',
    b" ",
    b"  ",
    b",",
    b"=",
    b"\n",
    b"\r",
    b"\r\n",
    b"\x00",
    b"\t",
    b"#",
    b"time",
    b",time=1",
    b"9" * 25,
    b"-",
    b".",
    b"e",
    b"i",
    b"u",
    b'\\"',
    b"\\ ",
    b"\\,",
    b"\\=",
    b"\\\\",
    "é".encode(),
    b"\xff",
]


@st.composite
def mutated_body(draw: st.DrawFn, precision: Precision) -> bytes:
    """Telegraf-like lines joined by newlines (or CRLF), then a few random byte mutations."""
    lines = draw(st.lists(telegraf_line(precision), min_size=1, max_size=12))
    body = bytearray(draw(st.sampled_from([b"\n", b"\r\n"])).join(lines))
    body += draw(st.sampled_from([b"\n", b"", b"\r\n", b"\n\n", b" \n", b"\r"]))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(body)))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            body[at:at] = draw(st.sampled_from(_INSERTS))
        elif kind == 1:
            del body[at : at + draw(st.integers(1, 3))]
        elif kind == 2 and at < len(body):
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif at < len(body):  # repeat a slice: duplicate keys, fields, lines
            size = draw(st.integers(1, 40))
            body[at:at] = body[max(0, at - size) : at]
    return bytes(body)


@st.composite
def mutated_case(draw: st.DrawFn) -> tuple[bytes, Precision, dict[str, object]]:
    """A mutated body, a precision, and validate() options."""
    precision = draw(st.sampled_from(PRECISIONS))
    options: dict[str, object] = {"rules": draw(st.sampled_from(RULES))}
    if draw(st.booleans()):
        options["max_line_bytes"] = draw(st.sampled_from([0, 20, 60, 120, 65_536, 70_000]))
    if draw(st.booleans()):
        options["max_errors"] = draw(st.integers(0, 3))
    return draw(mutated_body(precision)), precision, options


@SETTINGS
@given(mutated_case())
def test_mutated_telegraf_bodies_decided_identically(
    case: tuple[bytes, Precision, dict[str, object]],
) -> None:
    """Generated, mutated Telegraf-like bodies: C and Python agree field by field."""
    body, precision, options = case
    assert_same(body, precision, **options)


@SETTINGS
@given(mutated_case())
def test_c_agrees_with_the_exact_parser_alone(
    case: tuple[bytes, Precision, dict[str, object]],
) -> None:
    """C and the exact parser (no bulk path at all) agree on the same bodies."""
    body, precision, options = case
    assert exact_outcome(body, precision, **options) == outcome(body, precision, "c", **options)


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(PRECISIONS))
def test_random_bytes_decided_identically(body: bytes, precision: Precision) -> None:
    """Arbitrary bytes: no crash, and C and Python agree (body errors included)."""
    assert_same(body, precision)


_ALPHABET = st.sampled_from(list(b'm f=1iu.eE-+tTrRuUfalsAL" ,\\\n\r\t#\x00x0123456789'))


@SETTINGS
@given(st.lists(_ALPHABET, max_size=200).map(bytes), st.sampled_from(PRECISIONS))
def test_line_protocol_alphabet_soup_decided_identically(body: bytes, precision: Precision) -> None:
    """Random bytes drawn from line protocol's own alphabet: C and Python agree."""
    assert_same(body, precision, rules=TimeRules(guard=False))


# --- larger bodies, deterministic ----------------------------------------------------------


def _telegraf_body(rng: random.Random, lines: int) -> bytes:
    """A Telegraf-like body of `lines` valid lines (as bench/lp_speed.py makes them)."""
    out = []
    for index in range(lines):
        host = f"host=web-{index % 7:03d}"
        stamp = NOW - rng.randrange(10**12)
        kind = index % 4
        if kind == 0:
            fields = ",".join(f"usage_{k}={rng.uniform(0, 100)!r}" for k in "abcdefghij")
            out.append(f"cpu,cpu=cpu{index % 4},{host} {fields} {stamp}")
        elif kind == 1:
            out.append(
                f"mem,{host} used={rng.randrange(2**40)}i,free={rng.randrange(2**64)}u {stamp}"
            )
        elif kind == 2:
            out.append(f'system,{host} uptime_format="{index} days, 1:02",up=true {stamp}')
        else:
            out.append(f"net,{host},interface=eth0 drop_in=0u,speed=-10000i,err=1e-3 {stamp}")
    return ("\n".join(out) + "\n").encode()


@pytest.mark.parametrize("seed", range(12))
def test_large_bodies_with_scattered_damage_decided_identically(seed: int) -> None:
    """2,000-line bodies with a few damaged lines: C hands each to Python and resumes."""
    rng = random.Random(seed)
    body = bytearray(_telegraf_body(rng, 2000))
    for _ in range(seed * 3):
        at = rng.randrange(len(body))
        body[at:at] = rng.choice(_INSERTS)
    precision: Precision = "ns"
    for rules in RULES[:3]:
        assert_same(bytes(body), precision, rules=rules)


def test_clean_large_body_is_returned_without_copy_by_c() -> None:
    """A clean body comes back as the very same object from C too."""
    body = _telegraf_body(random.Random(1), 2000)
    result, same_object = assert_same(body)
    assert (True, 2000) == (same_object, result.accepted)  # type: ignore[attr-defined]


@pytest.mark.parametrize("precision", ["ns", "s", "m"])
def test_every_prefix_of_a_body_decided_identically(precision: Precision) -> None:
    """Cut anywhere (mid-name, mid-number, after a lone `t`): C stays in bounds and agrees."""
    unit_now = NOW // NS_PER_UNIT[precision]
    body = (
        b'cpu,host=a usage=1.5e-3,n=-12i,u=7u,s="x, y",b=true,c=F %d\r\n'
        b"mem,host=b free=18446744073709551615u,t=t,e=1E+5 %d\n"
        b"disk used=-9223372036854775808i,x=False\n" % (unit_now, unit_now - 1)
    )
    for cut in range(len(body) + 1):
        assert_same(body[:cut], precision)


_AFTER_DIGITS = [b""] + [bytes([c]) for c in b"\n ,iu.e:/\x00\xf9\xfa\xff"]


@pytest.mark.parametrize("width", range(1, 42))
def test_digit_runs_of_every_width_and_ending_decided_identically(width: int) -> None:
    """C reads digits eight at a time: runs of every width, ended by every kind of byte
    (including those that carry when 6 is added), mid-body and at the very end, in integers,
    floats and timestamps, agree with Python."""
    digits = (b"1234567890" * 5)[:width]
    unit_now = NOW // NS_PER_UNIT["s"]
    for after in _AFTER_DIGITS:
        for line in (
            b"m f=" + digits + b"i" + after,
            b"m f=" + digits + after + b" %d" % unit_now,
            b"m f=1." + digits + after,
            b"m f=1e" + digits + after,
            b"m f=" + digits + b"u," + b"g=" + digits + after,
            b"m f=1 " + digits + after,
        ):
            assert_same(line, "s")
            assert_same(line + b"\nm f=1\n", "s")


# --- the C function itself ----------------------------------------------------------------


def test_scan_plain_rejects_bad_arguments() -> None:
    """Wrong types and a position outside the body raise instead of reading out of bounds."""
    from gateway.lineprotocol import _speedups

    policy = (1, 1, INT64_MIN, INT64_MAX, 0, 0, NOW, T, 65_536)
    with pytest.raises(ValueError, match="outside"):
        _speedups.scan_plain(b"m f=1\n", 7, policy)
    with pytest.raises(ValueError, match="outside"):
        _speedups.scan_plain(b"m f=1\n", -1, policy)
    with pytest.raises(TypeError):
        _speedups.scan_plain(bytearray(b"m f=1\n"), 0, policy)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _speedups.scan_plain(b"m f=1\n", 0, policy[:8])  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        _speedups.scan_plain(b"m f=1\n", 0, (1, 1, 0, 2**63, 0, 0, NOW, T, 65_536))
    with pytest.raises(ValueError, match="positive"):
        _speedups.scan_plain(b"m f=1\n", 0, (0, 1, 0, 1, 0, 0, NOW, T, 65_536))


def test_scan_plain_reports_run_and_stop() -> None:
    """It accepts the plain lines and stops at the first line Python must see."""
    from gateway.lineprotocol import _speedups

    policy = (1, 1, INT64_MIN, INT64_MAX, 0, 0, NOW, T, 65_536)
    body = b"m f=1 5\nm f=2 3\nm,t=a\\ b f=1 4\nm f=1 9\n"
    assert (16, 2, 2, 3, 5, None, None) == _speedups.scan_plain(body, 0, policy)
    assert (len(body), 0, 0, 0, 0, None, None) == _speedups.scan_plain(body, len(body), policy)
    last = body.index(b"m f=1 9")
    assert (len(body), 1, 1, 9, 9, None, None) == _speedups.scan_plain(body, last, policy)
    assert (6, 0, 1, NOW, NOW, b"m f=1 " + T + b"\n", None) == _speedups.scan_plain(
        b"m f=1\r", 0, policy
    )


def test_scan_plain_refuses_a_line_for_its_timestamp_alone() -> None:
    """A plain, valid line failing the guard stops the scan with the end of that line."""
    from gateway.lineprotocol import _speedups

    policy = (1, 1, 0, 100, 0, 0, NOW, T, 65_536)
    body = b"m f=1 5\nm f=1 500\r\nm f=1 700"
    newline = body.index(b"\r\n") + 1
    assert (8, 1, 1, 5, 5, None, newline) == _speedups.scan_plain(body, 0, policy)
    last = newline + 1
    assert (last, 0, 0, 0, 0, None, len(body)) == _speedups.scan_plain(body, last, policy)
    result = validate(body, "ns", now_ns=NOW, rules=TimeRules(guard=False, round_to_ns=0))
    assert (3, b"m f=1 5\nm f=1 500\nm f=1 700\n") == (result.accepted, result.body)


def _many_keys_line(rng: random.Random, count: int, damage: str) -> bytes:
    """A plain line with `count` keys (a few tags, the rest fields), one of them damaged."""
    keys = [f"k{index}x{rng.randrange(10**6)}" for index in range(count)]
    rng.shuffle(keys)
    if damage == "duplicate":
        keys[rng.randrange(count)] = keys[rng.randrange(count)]
    elif damage == "time":
        keys[rng.randrange(count)] = "time"
    tags = "".join(f",{key}=v" for key in keys[:3])
    fields = ",".join(f"{key}={index}i" for index, key in enumerate(keys[3:]))
    return f"m{tags} {fields} {NOW}".encode()


@pytest.mark.parametrize("damage", ["none", "duplicate", "time"])
@pytest.mark.parametrize("count", [4, 31, 32, 33, 64, 65, 200, 1000])
def test_lines_with_many_keys_decided_identically(count: int, damage: str) -> None:
    """Few keys (bit filter) or many (sorted): duplicates and `time` found wherever they are."""
    rng = random.Random(count)
    lines = [_many_keys_line(rng, count, damage) for _ in range(20)]
    assert_same(b"\n".join(lines) + b"\n")
