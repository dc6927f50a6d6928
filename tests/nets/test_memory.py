"""Freed memory goes back to the system once a stage has grown by the slack, not after every
block (fresh pages cost each block again)."""

import nets.memory as memory


def test_free_memory_is_released_only_past_the_slack(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_trim", lambda: calls.append)
    monkeypatch.setattr(memory, "_released_at", [memory.resident_mb() + 10_000])
    memory.release_free_memory()
    assert calls == []  # grown by less than the slack since the last release
    monkeypatch.setattr(memory, "_released_at", [memory.resident_mb() - memory.SLACK_MB - 1])
    memory.release_free_memory()
    assert calls == [0] and 0 < memory._released_at[0] <= memory.resident_mb() + 1


def test_the_real_release_runs_and_reports_resident_memory():
    memory._released_at[0] = 0
    memory.release_free_memory()
    assert memory.resident_mb() > 10
