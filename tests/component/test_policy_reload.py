"""Hot reload of the policy file (gateway.auth.policywatch): changes, refusals, the counter."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from gateway.auth import policywatch
from gateway.auth.policy import Policy
from gateway.auth.policyfile import add_token, create_default_policy, remove_token
from gateway.auth.policywatch import FileStamp, PolicyWatcher, file_stamp
from gateway.observability import Metrics


class Applied:
    """Records every policy the watcher put in force."""

    def __init__(self) -> None:
        self.policies: list[Policy] = []

    def __call__(self, policy: Policy) -> None:
        self.policies.append(policy)

    def names(self) -> list[str]:
        """Token names of the latest policy applied."""
        return [t.name for t in self.policies[-1].tokens]


@pytest.fixture(name="policy_path")
def fixture_policy_path(tmp_path: Path) -> Path:
    """A policy file with the default admin token."""
    path = tmp_path / "policy.toml"
    create_default_policy(path)
    return path


@pytest.fixture(name="metrics")
def fixture_metrics() -> Metrics:
    """Metrics on a fresh registry."""
    return Metrics(CollectorRegistry())


@pytest.fixture(name="applied")
def fixture_applied() -> Applied:
    """The apply callback, recording."""
    return Applied()


@pytest.fixture(name="watcher")
def fixture_watcher(policy_path: Path, metrics: Metrics, applied: Applied) -> PolicyWatcher:
    """A watcher primed on the current file."""
    watcher = PolicyWatcher(policy_path, apply=applied, reloads=metrics.policy_reloads)
    watcher.prime()
    return watcher


def reloads(metrics: Metrics, result: str) -> float:
    """gateway_policy_reloads_total{result=...}."""
    value = metrics.registry.get_sample_value("gateway_policy_reloads_total", {"result": result})
    return value or 0.0


async def test_unchanged_file_is_not_reloaded(watcher: PolicyWatcher, applied: Applied) -> None:
    """A poll with no change reloads nothing."""
    assert (None, []) == (await watcher.poll(), applied.policies)


async def test_new_token_is_picked_up(
    watcher: PolicyWatcher, policy_path: Path, applied: Applied
) -> None:
    """A token added by `token create` (atomic rename) is in force after the next poll."""
    add_token(policy_path, "ci", write=["ci"], read=[], expires=None)
    assert True is await watcher.poll()
    assert ["admin", "ci"] == applied.names()


async def test_revoked_token_is_gone(
    watcher: PolicyWatcher, policy_path: Path, applied: Applied
) -> None:
    """A token removed by `token revoke` is out of force after the next poll."""
    add_token(policy_path, "ci", write=["ci"], read=[], expires=None)
    await watcher.poll()
    remove_token(policy_path, "ci")
    await watcher.poll()
    assert ["admin"] == applied.names()


async def test_successful_reload_counts_ok(
    watcher: PolicyWatcher, policy_path: Path, metrics: Metrics
) -> None:
    """A reload that succeeds increments result="ok"."""
    add_token(policy_path, "ci", write=["ci"], read=[], expires=None)
    await watcher.poll()
    assert (1.0, 0.0) == (reloads(metrics, "ok"), reloads(metrics, "error"))


async def test_in_place_edit_with_old_mtime_is_seen(
    watcher: PolicyWatcher, policy_path: Path, applied: Applied
) -> None:
    """An in-place edit of the same size with the mtime put back is still seen (ctime)."""
    before = policy_path.stat()
    text = policy_path.read_text()
    with policy_path.open("r+") as file:  # same inode, same size
        file.write(text.replace('name = "admin"', 'name = "admix"'))
    os.utime(policy_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert True is await watcher.poll()
    assert ["admix"] == applied.names()


async def test_invalid_file_is_refused(
    watcher: PolicyWatcher, policy_path: Path, applied: Applied, metrics: Metrics
) -> None:
    """Garbage in the file: nothing applied, result="error" counted."""
    policy_path.write_text("this is [not toml")
    assert False is await watcher.poll()
    assert ([], 1.0) == (applied.policies, reloads(metrics, "error"))


async def test_refusal_is_one_log_line_naming_file_and_problem(
    watcher: PolicyWatcher, policy_path: Path
) -> None:
    """The refusal is logged once, with the file and what is wrong with it."""
    policy_path.write_text('[[tokens]]\nname = "x"\nhash = "sha256:00"\n')
    with capture_logs() as logs:
        await watcher.poll()
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert 1 == len(errors)
    assert str(policy_path) in errors[0]["error"]
    assert '"hash"' in errors[0]["error"]
    assert "previous policy stays in force" in errors[0]["event"]


async def test_same_broken_file_is_reported_once(
    watcher: PolicyWatcher, policy_path: Path, metrics: Metrics
) -> None:
    """Polling a file that stays broken does not count or log the error again."""
    policy_path.write_text("garbage = ")
    await watcher.poll()
    await watcher.poll()
    assert 1.0 == reloads(metrics, "error")


async def test_missing_file_is_refused(
    watcher: PolicyWatcher, policy_path: Path, applied: Applied, metrics: Metrics
) -> None:
    """A deleted policy file keeps the old policy and counts an error."""
    policy_path.unlink()
    assert False is await watcher.poll()
    assert ([], 1.0) == (applied.policies, reloads(metrics, "error"))


async def test_fixed_file_is_loaded_after_a_refusal(
    watcher: PolicyWatcher, policy_path: Path, applied: Applied
) -> None:
    """Once the operator fixes the file, the next poll puts it in force."""
    good = policy_path.read_text()
    policy_path.write_text("garbage = ")
    await watcher.poll()
    policy_path.write_text(good.replace('"admin"', '"fixed"'))
    assert True is await watcher.poll()
    assert ["fixed"] == applied.names()


async def test_sighup_reloads_an_unchanged_file(
    watcher: PolicyWatcher, applied: Applied, metrics: Metrics
) -> None:
    """reload (SIGHUP) loads the file even when it did not change."""
    assert True is await watcher.reload("SIGHUP")
    assert (["admin"], 1.0) == (applied.names(), reloads(metrics, "ok"))


async def test_reload_soon_runs_in_the_background(watcher: PolicyWatcher, applied: Applied) -> None:
    """reload_soon (the signal handler's call) reloads in a task."""
    assert True is await watcher.reload_soon("SIGHUP")
    assert 1 == len(applied.policies)


async def test_change_within_one_timestamp_tick_is_seen(
    watcher: PolicyWatcher,
    policy_path: Path,
    applied: Applied,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A recent file whose stamp did not change is compared by content, so no edit is missed."""
    frozen = FileStamp(1, 1, 1, time.time_ns(), time.time_ns())
    monkeypatch.setattr(policywatch, "file_stamp", lambda path: frozen)
    await watcher.poll()  # the stamp differs from the primed one: loads, remembers content
    policy_path.write_text(policy_path.read_text().replace('"admin"', '"other"'))
    assert True is await watcher.poll()
    assert ["other"] == applied.names()


async def test_settled_unchanged_file_is_not_read(
    watcher: PolicyWatcher, policy_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a file is older than the settle time, an unchanged stamp means unchanged."""
    old = time.time_ns() - 10 * 10**9
    os.utime(policy_path, ns=(old, old))
    watcher.prime()
    reads: list[Path] = []
    monkeypatch.setattr(policywatch, "_digest_of", lambda path: reads.append(path))
    await watcher.poll()
    assert [] == reads


async def test_run_polls_until_cancelled(
    policy_path: Path, metrics: Metrics, applied: Applied
) -> None:
    """The background loop picks up a change within its interval."""
    watcher = PolicyWatcher(
        policy_path, apply=applied, reloads=metrics.policy_reloads, interval_s=0.05
    )
    watcher.prime()
    task = asyncio.create_task(watcher.run())
    add_token(policy_path, "ci", write=["ci"], read=[], expires=None)
    async with asyncio.timeout(5):
        while not applied.policies:
            await asyncio.sleep(0.01)
    task.cancel()
    assert ["admin", "ci"] == applied.names()


async def test_run_survives_a_failing_poll(
    policy_path: Path, metrics: Metrics, applied: Applied, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error in one poll is logged and the loop goes on."""
    watcher = PolicyWatcher(
        policy_path, apply=applied, reloads=metrics.policy_reloads, interval_s=0.01
    )
    watcher.prime()
    calls: list[int] = []
    real_stamp: Callable[[Path], FileStamp | None] = file_stamp

    def flaky(path: Path) -> FileStamp | None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real_stamp(path)

    monkeypatch.setattr(policywatch, "file_stamp", flaky)
    task = asyncio.create_task(watcher.run())
    async with asyncio.timeout(5):
        while len(calls) < 3:
            await asyncio.sleep(0.01)
    alive = not task.done()
    task.cancel()
    assert (True, True) == (alive, len(calls) >= 3)
