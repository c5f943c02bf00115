"""Unit tests for gateway.routing: source names, rewrites, the name check, targets."""

from __future__ import annotations

import pytest

from gateway.routing import (
    InvalidDatabase,
    Router,
    Targets,
    compile_rewrite,
    source_name_v1,
    source_name_v2,
)


@pytest.fixture(name="router")
def fixture_router() -> Router:
    """Two rewrite rules (autogen stripped, legacy_ prefix moved), no upstreams, store on *."""
    return Router(
        [
            compile_rewrite(r"^(.+)/autogen$", r"\1"),
            compile_rewrite(r"legacy_(?P<site>\w+)", r"sites/\g<site>"),
            compile_rewrite(r"legacy_.*", "never_reached"),
        ],
        [],
        ["*"],
    )


@pytest.fixture(name="fan_out")
def fixture_fan_out() -> Router:
    """Three upstreams with overlapping patterns and a store for metrics_* only."""
    return Router(
        [],
        [
            ("dedicated", ["*"]),
            ("old", ["telegraf", "edge_*"]),
            ("v1", ["db/*"]),
        ],
        ["metrics_*"],
    )


def test_source_name_v2_is_bucket() -> None:
    """A v2 source name is the bucket unchanged, slashes included."""
    assert "db/rp" == source_name_v2("db/rp")


@pytest.mark.parametrize(
    ("rp", "expected"),
    [
        (None, "db"),
        ("", "db"),
        ("autogen", "db"),
        ("default", "db"),
        ("weekly", "db/weekly"),
        ("Autogen", "db/Autogen"),
    ],
)
def test_source_name_v1(rp: str | None, expected: str) -> None:
    """v1: db alone for no/empty/autogen/default rp (exact case), else db/rp."""
    assert expected == source_name_v1("db", rp)


def test_rewrite_with_numbered_group(router: Router) -> None:
    """A rule's \\1 takes the first group of the full match."""
    assert "telegraf" == router.database("telegraf/autogen")


def test_rewrite_with_named_group(router: Router) -> None:
    """A rule's \\g<name> takes a named group."""
    assert "sites/paris" == router.database("legacy_paris")


def test_rewrite_first_match_wins(router: Router) -> None:
    """When two rules match, the earlier one decides."""
    assert "sites/x" == router.database("legacy_x")


def test_rewrite_needs_full_match() -> None:
    """A rule that matches only a prefix does not apply (fullmatch, not search)."""
    router = Router([compile_rewrite(r"legacy_(\w+)", r"\1")], [], None)
    assert "legacy_a/b" == router.database("legacy_a/b")


def test_later_rule_applies_when_earlier_do_not_match(router: Router) -> None:
    """A name the first rules miss falls through to a later matching rule."""
    assert "never_reached" == router.database("legacy_-")


def test_no_rule_matches_keeps_name(router: Router) -> None:
    """Without a matching rule the source name is the database name."""
    assert "telegraf/weekly" == router.database("telegraf/weekly")


@pytest.mark.parametrize(
    "name",
    ["a", "a" * 64, "A-Za-z0-9_-/", "db/rp", "/", "-", "_"],
)
def test_valid_database_names(name: str) -> None:
    """1-64 characters of A-Za-z0-9_-/ are accepted as they are."""
    assert name == Router([], [], None).database(name)


@pytest.mark.parametrize(
    "name",
    ["", "a" * 65, "a b", "db.name", "caf\u00e9", "\u0661", "db\n", "db\x00", "x;y", "\uff41"],
    ids=[
        "empty",
        "65",
        "space",
        "dot",
        "accent",
        "arabic-digit",
        "newline",
        "nul",
        "semi",
        "fullwidth",
    ],
)
def test_invalid_database_names(name: str) -> None:
    """Empty, too long, punctuation outside _-/, and non-ASCII letters or digits are refused."""
    with pytest.raises(InvalidDatabase):
        Router([], [], None).database(name)


def test_invalid_database_message_names_value_and_rule() -> None:
    """The message quotes the name and states the rule."""
    with pytest.raises(InvalidDatabase) as caught:
        Router([], [], None).database("a b")
    assert 'invalid database name "a b": use 1-64 characters of A-Za-z0-9_-/' == str(caught.value)


def test_invalid_rewritten_name_mentions_source() -> None:
    """When a rewrite produced the bad name, the message also quotes the source name."""
    router = Router([compile_rewrite(r"(.*)", r"\1.x")], [], None)
    with pytest.raises(InvalidDatabase, match=r'"db\.x" \(rewritten from "db"\)'):
        router.database("db")


def test_invalid_database_message_is_bounded() -> None:
    """A huge name is cut short in the message."""
    with pytest.raises(InvalidDatabase) as caught:
        Router([], [], None).database("x" * 100_000 + " ")
    assert len(str(caught.value)) < 200


def test_invalid_database_message_escapes_control_characters() -> None:
    """Control characters in the name are escaped in the message (one log line stays one)."""
    with pytest.raises(InvalidDatabase) as caught:
        Router([], [], None).database("a\nb")
    assert "\n" not in str(caught.value)


def test_compile_rewrite_refuses_bad_regex() -> None:
    """An invalid regex is a ValueError naming the pattern."""
    with pytest.raises(ValueError, match=r'rewrite match "\(unclosed" is not a valid regex'):
        compile_rewrite("(unclosed", r"\1")


def test_compile_rewrite_refuses_missing_group_number() -> None:
    """A template naming a group number the pattern lacks is refused at load time."""
    with pytest.raises(ValueError, match=r"invalid group reference 2.*has 1 group\)"):
        compile_rewrite(r"^(.+)/autogen$", r"\2")


def test_compile_rewrite_refuses_missing_group_name() -> None:
    """A template naming a group the pattern lacks is refused at load time."""
    with pytest.raises(ValueError, match="unknown group name 'site'"):
        compile_rewrite(r"^(.+)$", r"\g<site>")


def test_compile_rewrite_refuses_bad_escape() -> None:
    """An unknown escape in the template is refused at load time."""
    with pytest.raises(ValueError, match="bad escape"):
        compile_rewrite(r"^(.+)$", r"\q")


def test_compile_rewrite_accepts_group_zero() -> None:
    """\\g<0> (the whole match) is a valid reference."""
    assert "pre_db" == Router([compile_rewrite(".+", r"pre_\g<0>")], [], None).database("db")


def test_targets_fan_out_in_config_order(fan_out: Router) -> None:
    """Every matching upstream receives the write, in config order."""
    assert Targets(("dedicated", "old"), store=False) == fan_out.targets("edge_paris")


def test_targets_star_matches_slash(fan_out: Router) -> None:
    """An upstream pattern's * also matches /."""
    assert ("dedicated", "v1") == fan_out.targets("db/weekly").upstreams


def test_targets_store_patterns(fan_out: Router) -> None:
    """The store takes a database only when its patterns match."""
    assert (True, False) == (
        fan_out.targets("metrics_cpu").store,
        fan_out.targets("telegraf").store,
    )


def test_targets_store_disabled() -> None:
    """store_databases None means the store never receives writes."""
    assert False is Router([], [("up", ["*"])], None).targets("db").store


def test_targets_no_match_is_empty() -> None:
    """A database nothing matches has empty targets."""
    assert True is Router([], [("up", ["telegraf"])], ["metrics_*"]).targets("other").empty


def test_targets_store_only_is_not_empty() -> None:
    """A write only the store takes still has somewhere to go."""
    assert False is Router([], [], ["*"]).targets("db").empty


def test_targets_are_cached() -> None:
    """Asking twice for one database returns the cached object."""
    router = Router([], [("up", ["*"])], None)
    assert router.targets("db") is router.targets("db")


def test_targets_cache_is_bounded() -> None:
    """Beyond its size the cache forgets the oldest database, and answers stay correct."""
    router = Router([], [("up", ["db*"])], None, cache_size=2)
    first = router.targets("db1")
    router.targets("db2")
    router.targets("db3")
    again = router.targets("db1")
    assert (False, ("up",)) == (first is again, again.upstreams)
