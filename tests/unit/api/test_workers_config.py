"""How many workers `entasis api serve` runs and where their metrics go (entasis.api.cli.metrics_dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

from entasis.api.cli import MULTIPROC_ENV, metrics_dir
from entasis.config import Settings


def test_workers_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENTASIS_API__WORKERS", raising=False)
    assert Settings().api.workers == 2
    monkeypatch.setenv("ENTASIS_API__WORKERS", "3")
    assert Settings().api.workers == 3
    monkeypatch.setenv("ENTASIS_API__WORKERS", "1")
    assert Settings().api.workers == 1
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("ENTASIS_API__WORKERS", bad)
        with pytest.raises(ValueError, match="workers"):
            Settings()


def test_one_worker_without_the_env_keeps_in_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert metrics_dir(1) == (None, False)


def test_several_workers_get_a_fresh_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    path, made = metrics_dir(2)
    try:
        assert made and path is not None and Path(path).is_dir() and not any(Path(path).iterdir())
    finally:
        Path(path or "").rmdir()


def test_a_given_directory_is_used_and_its_stale_counts_removed(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """An earlier run's counter files would be summed into this run's totals: they go; nothing else does."""
    d = tmp_path / "prom"
    monkeypatch.setenv(MULTIPROC_ENV, str(d))
    assert metrics_dir(1) == (str(d), False) and d.is_dir()  # created when missing, also for one worker
    (d / "counter_123.db").write_bytes(b"x")
    (d / "histogram_123.db").write_bytes(b"x")
    (d / "README").write_text("keep")
    assert metrics_dir(2) == (str(d), False)
    assert sorted(p.name for p in d.iterdir()) == ["README"]


def test_reap_dead_workers_drops_only_gone_processes_live_gauges(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from entasis.api.metrics import reap_dead_workers

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me, parent = os.getpid(), os.getppid()
    names = [f"gauge_liveall_{gone.pid}.db", f"gauge_livemin_{gone.pid}.db", f"histogram_{gone.pid}.db",
             f"gauge_liveall_{me}.db", f"gauge_liveall_{parent}.db", "gauge_liveall_notapid.db"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    assert reap_dead_workers(str(tmp_path)) == [gone.pid]
    # the gone worker's counts stay (summed into the totals); only its live gauges go
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])
    assert reap_dead_workers(str(tmp_path)) == []
