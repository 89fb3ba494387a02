"""The embedded server: started once, found by a second process, stopped cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg

from entasis.store import embedded


def test_second_process_finds_running_server(tmp_path: Path) -> None:
    home = tmp_path / "h"
    server = embedded.ensure_running(home, preferred_port=0)
    try:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "entasis"
        code = (
            "import sys; from pathlib import Path; from entasis.store import embedded;"
            f"s = embedded.ensure_running(Path({str(home)!r}), preferred_port=0); print(s.port, s.pid)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        assert (int(out[0]), int(out[1])) == (server.port, server.pid)
    finally:
        assert embedded.stop(home) is True
    assert embedded.status(home) is None
    assert embedded.stop(home) is False
    # data survives a restart
    again = embedded.ensure_running(home, preferred_port=0)
    try:
        with psycopg.connect(again.url) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        embedded.stop(home)
