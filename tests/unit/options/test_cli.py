"""``entasis options surface``: tables on stdout and a PNG, from a CSV or from the database."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from entasis.cli import app
from entasis.store.db import connect
from entasis.store.market import write_option_quotes

from .conftest import DERIBIT_CSV, make_chain

runner = CliRunner()


def _png_ok(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 20_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_surface_from_real_deribit_csv(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "btc.png"
    res = runner.invoke(app, ["options", "surface", "--currency", "BTC", "--csv", str(shared_data / DERIBIT_CSV),
                              "--out", str(out), "--no-heston"])
    assert res.exit_code == 0, res.output
    assert "13Mar26" in res.output and "25Dec26" in res.output
    assert "snapshot features" in res.output and "skipped (--no-heston)" in res.output
    _png_ok(out)


def test_surface_from_database_latest_or_given_snapshot(db_url: str, tmp_path: Path) -> None:
    with connect() as conn:
        write_option_quotes(conn, pd.concat([make_chain("2024-03-01 08:00"), make_chain("2024-03-01 09:00")]))
    res = runner.invoke(app, ["options", "surface", "--currency", "btc", "--out", str(tmp_path / "a.png"), "--store"])
    assert res.exit_code == 0, res.output
    assert "2024-03-01 09:00:00 UTC" in res.output and "Heston: v0=" in res.output and "Feller" in res.output
    assert "stored 7 expiries" in res.output
    _png_ok(tmp_path / "a.png")
    res = runner.invoke(app, ["options", "surface", "-c", "BTC", "--snapshot", "2024-03-01T08:00Z", "--no-heston",
                              "--detail"])
    assert res.exit_code == 0, res.output
    assert "2024-03-01 08:00:00 UTC" in res.output and "market vs SVI" in res.output
    # default PNG location: the reports dir
    assert list(Path(tmp_path.parent).rglob("options_surface_BTC_20240301T080000.png"))
    with connect() as conn:
        row = conn.execute("SELECT count(*) FROM features.option_features").fetchone()
        assert row is not None and row[0] == 1


def test_surface_errors_are_reported(db_url: str, tmp_path: Path) -> None:
    res = runner.invoke(app, ["options", "surface", "--currency", "ETH", "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 1 and "no deribit ETH option quotes" in res.output
    res = runner.invoke(app, ["options", "surface", "--csv", str(tmp_path / "missing.csv")])
    assert res.exit_code == 1 and "not found" in res.output
