"""Every bad-input rule rejects the batch with a message naming the row and the rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from entasis.store.db import connect
from entasis.store.market import write_candles, write_funding
from entasis.store.validate import CANDLE_RULES, ValidationFailed, find_violations

from .test_upsert import candles, count


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("open", 0.0, "non-positive price"),
        ("close", -5.0, "non-positive price"),
        ("high", 99.0, "high < max(open, close)"),
        ("low", 200.0, "low > min(open, close)"),
        ("volume", -1.0, "negative volume"),
        ("close", np.nan, "NaN"),
        ("volume", np.nan, "NaN"),
    ],
)
def test_bad_candle_rejected_nothing_written(db_url: str, column: str, value: float, rule: str) -> None:
    df = candles(10)
    df.loc[4, column] = value
    with pytest.raises(ValidationFailed) as err:
        with connect() as conn:
            write_candles(conn, df)
    msg = str(err.value)
    assert rule in msg
    assert "row 4" in msg
    assert str(df["ts"].iloc[4].date()) in msg
    with connect() as conn:
        assert count(conn) == 0


def test_naive_timestamp_rejected(db_url: str) -> None:
    df = candles(5)
    df["ts"] = df["ts"].dt.tz_localize(None)
    with pytest.raises(ValidationFailed, match="timezone-aware"):
        with connect() as conn:
            write_candles(conn, df)
    with connect() as conn:
        assert count(conn) == 0


def test_unknown_symbol_rejected(db_url: str) -> None:
    df = pd.concat([candles(5), candles(5, symbol="NOPE/USDT")], ignore_index=True)
    with pytest.raises(ValidationFailed, match="unknown symbol") as err:
        with connect() as conn:
            write_candles(conn, df)
    assert "NOPE/USDT" in str(err.value)
    with connect() as conn:
        assert count(conn) == 0


def test_registered_instrument_accepted(db_url: str) -> None:
    from entasis.store.market import register_instruments

    inst = pd.DataFrame([{"exchange": "binance", "symbol": "DOGE/USDT", "market_type": "spot",
                          "base": "DOGE", "quote": "USDT", "active": True}])
    with connect() as conn:
        register_instruments(conn, inst)
        r = write_candles(conn, candles(5, symbol="DOGE/USDT"))
    assert r.inserted == 5


def test_bad_batch_does_not_touch_existing_rows(db_url: str) -> None:
    good = candles(10)
    with connect() as conn:
        write_candles(conn, good)
    bad = candles(10, scale=3.0)
    bad.loc[7, "volume"] = -2
    with pytest.raises(ValidationFailed):
        with connect() as conn:
            write_candles(conn, bad)
    with connect() as conn:
        closes = [r[0] for r in conn.execute("SELECT close FROM market.candles ORDER BY ts").fetchall()]
    assert closes == good["close"].tolist()


def test_find_violations_lists_each_rule_once_per_row() -> None:
    df = candles(6)
    df.loc[1, "volume"] = -1
    df.loc[2, "high"] = 1.0  # also below low/open/close
    v = find_violations(df, CANDLE_RULES)
    assert set(v["row"]) == {1, 2}
    assert set(v.loc[v["row"] == 1, "rule"]) == {"negative volume"}
    assert "high < max(open, close)" in set(v.loc[v["row"] == 2, "rule"])


def test_funding_rules(db_url: str) -> None:
    df = pd.DataFrame({"exchange": "binanceusdm", "symbol": "BTC/USDT:USDT",
                       "ts": pd.date_range("2024-01-01", periods=3, freq="8h", tz="UTC"),
                       "funding_rate": [0.0001, np.nan, 0.0002]})
    with pytest.raises(ValidationFailed, match="funding_rate"):
        with connect() as conn:
            write_funding(conn, df)
    df.loc[1, "funding_rate"] = -0.0003
    with connect() as conn:
        assert write_funding(conn, df).inserted == 3


def test_violations_come_in_rule_order_with_every_rule_a_row_broke() -> None:
    """pandera runs every check lazily; the report keeps the rule order of the rule set."""
    from entasis.store.validate import FUNDING_RULES

    df = pd.DataFrame({"symbol": ["BTC/USDT:USDT"] * 3, "funding_rate": [np.nan, 0.1, 2.0],
                       "ts": [pd.NaT, pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC")]})
    v = find_violations(df, FUNDING_RULES, known_symbols={"ETH/USDT:USDT"})
    assert list(v["rule"]) == ["timestamp must be timezone-aware (UTC)", "NaN or non-numeric funding_rate",
                               "funding_rate outside ±100%", "unknown symbol", "unknown symbol", "unknown symbol"]
    assert list(v["row"]) == [0, 0, 2, 0, 1, 2]
    assert v["key"].iloc[0] == "BTC/USDT:USDT NaT"  # a missing time is named, not a crash
    assert find_violations(df.iloc[[1]], FUNDING_RULES).empty


def test_a_rule_that_cannot_run_names_the_table_and_the_missing_column() -> None:
    from entasis.store.validate import OPTION_RULES, require_valid

    df = pd.DataFrame({"instrument": ["BTC-1"], "strike": [1.0], "kind": ["call"],
                       "snapshot_ts": pd.date_range("2024-01-01", periods=1, tz="UTC")})
    with pytest.raises(ValueError, match=r"market.option_quotes has the wrong shape.*bid above ask.*'bid'"):
        require_valid(df, OPTION_RULES, "market.option_quotes", key_cols=("instrument",))
