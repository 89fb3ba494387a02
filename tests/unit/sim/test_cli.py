"""``entasis sim-exchange serve`` as a user runs it: a real process, stopped with SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[3]


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "entasis.cli", "sim-exchange", "serve", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_serve_until_sigterm() -> None:
    proc = _serve("--port", "0", "--seed", "3", "--symbols", "BTC/USDT,ETH/USDT", "--now", "2023-06-01T12:30Z")
    try:
        out = ""
        deadline = time.time() + 30
        url = None
        while url is None and time.time() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            out += line
            m = re.search(r"(http://127\.0\.0\.1:\d+)", out)
            url = m.group(1) if m else None
        assert url, f"no URL announced: {out!r}"
        with urllib.request.urlopen(f"{url}/binance/api/v3/klines?symbol=ETHUSDT&interval=1h&limit=1") as r:  # noqa: S310
            rows = json.loads(r.read())
        assert rows[0][0] == int(pd.Timestamp("2023-06-01 12:00", tz="UTC").value // 1_000_000)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "stopped" in rest


def test_bad_replay_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    proc = _serve("--port", "0", "--replay", str(tmp_path))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "holds no candle CSVs" in " ".join(out.split())  # rich wraps long lines
