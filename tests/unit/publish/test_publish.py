"""publish_predictions against a real PostgreSQL with real features and real (tiny) models."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.publish import market_data as md

AS_OF = datetime(2023, 6, 1, 6, 0, tzinfo=UTC)  # 06:00: the 2023-05-31 bar closed at 00:00
BAR_CLOSE = datetime(2023, 6, 1, tzinfo=UTC)


def _rows(conn):
    cur = conn.execute(
        "SELECT asset, horizon, as_of, model_version, predicted_class, p_bearish, p_neutral, p_bullish, "
        "confidence, confidence_level, target_date, factors, run_id, data_hash, published_at, "
        "actual_class, realized_return, correct, jsonb_typeof(factors) FROM ml.predictions "
        "ORDER BY asset, horizon")
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _checksum(conn):
    from entasis.store.market import table_checksum

    return table_checksum(conn, "ml.predictions", ["asset", "horizon", "as_of", "model_version"])


def test_one_well_formed_prediction_per_asset_and_horizon(db_url):
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect

    with connect() as conn:
        md.load_market(conn)
        summary = publish_predictions(conn, as_of=AS_OF, assets=md.SYMBOLS, horizons=md.HORIZONS,
                                      loader=md.loader())
        rows = _rows(conn)
    assert summary.skipped == []
    assert summary.inserted == len(md.SYMBOLS) * len(md.HORIZONS) == len(rows)
    assert {(r["asset"], r["horizon"]) for r in rows} == {(a, h) for a in md.SYMBOLS for h in md.HORIZONS}
    b = md.bars()
    for r in rows:
        assert r["as_of"] == BAR_CLOSE
        assert r["target_date"] == BAR_CLOSE + timedelta(days=r["horizon"])
        assert r["published_at"] == BAR_CLOSE  # default published_at = as_of
        probs = [r["p_bearish"], r["p_neutral"], r["p_bullish"]]
        assert all(0.0 <= p <= 1.0 for p in probs)
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-9)
        assert r["predicted_class"] == max(range(3), key=lambda i: probs[i])
        assert math.isclose(r["confidence"], max(probs) * 100.0, rel_tol=1e-12)
        want = "high" if r["confidence"] >= 70 else "medium" if r["confidence"] >= 50 else "low"
        assert r["confidence_level"] == want
        assert r["model_version"] == f"entasis-pooled-{r['horizon']}d/3"
        assert r["run_id"] == f"run{r['horizon']:04d}"
        assert len(r["data_hash"]) == 64
        assert r["actual_class"] is None and r["correct"] is None
        # factors: a non-empty jsonb list of {feature, value, contribution}
        assert r["jsonb_typeof"] == "array"
        assert 0 < len(r["factors"]) <= 8
        for f in r["factors"]:
            assert set(f) == {"feature", "value", "contribution"}
            assert f["feature"] in md.FEATURES or f["feature"] == "asset"
            assert f["contribution"] != 0
        mags = [abs(f["contribution"]) for f in r["factors"]]
        assert mags == sorted(mags, reverse=True)
        # a factor's value is the feature's value at the predicted bar
        bar = b[(b["symbol"] == r["asset"]) & (b["ts"] == BAR_CLOSE - timedelta(days=1))].iloc[0]
        for f in r["factors"]:
            if f["feature"] == "asset":
                assert f["value"] == r["asset"]
            else:
                assert f["value"] == pytest.approx(bar[f["feature"]], rel=1e-12)


def test_same_probabilities_as_calling_the_model_directly(db_url):
    """The published row is the model's own prediction for that bar (with the bars before it)."""
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect

    with connect() as conn:
        md.load_market(conn)
        publish_predictions(conn, as_of=AS_OF, assets=["ETH/USDT"], horizons=[14], loader=md.loader())
        (row,) = _rows(conn)
    b = md.bars()
    eth = b[(b["symbol"] == "ETH/USDT") & (b["ts"] < BAR_CLOSE)].reset_index(drop=True)
    p = md.model("lgbm", 14).predict_proba(eth.iloc[[-1]], history=eth.iloc[:-1]).iloc[0]
    assert (row["p_bearish"], row["p_neutral"], row["p_bullish"]) == pytest.approx(
        (p["p_bearish"], p["p_neutral"], p["p_bullish"]), abs=1e-12)


def test_rerun_is_byte_identical_and_published_at_is_the_callers(db_url):
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect

    with connect() as conn:
        md.load_market(conn)
        first = publish_predictions(conn, as_of=AS_OF, loader=md.loader())
        before = _checksum(conn)
        again = publish_predictions(conn, as_of=AS_OF, loader=md.loader())
        assert _checksum(conn) == before
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, first.inserted)
        # a later run inside the same bar predicts the same bar: nothing changes either
        later = publish_predictions(conn, as_of=AS_OF + timedelta(hours=12), loader=md.loader())
        assert later.unchanged == first.inserted and _checksum(conn) == before
        # an explicit published_at is stored as given
        stamp = datetime(2023, 6, 1, 6, 5, tzinfo=UTC)
        upd = publish_predictions(conn, as_of=AS_OF, loader=md.loader(), published_at=stamp)
        assert upd.updated == first.inserted
        assert {r["published_at"] for r in _rows(conn)} == {stamp}


def test_never_uses_a_bar_in_progress_nor_later_data(db_url):
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect

    just_before = BAR_CLOSE - timedelta(microseconds=1)
    with connect() as conn:
        md.load_market(conn)  # features.bars extends to 2023-07-31: later rows must not matter
        s = publish_predictions(conn, as_of=just_before, assets=["BTC/USDT"], horizons=[7], loader=md.loader())
        assert [k[2] for k in s.keys] == [BAR_CLOSE - timedelta(days=1)]  # the 05-31 bar is still open
        s = publish_predictions(conn, as_of=BAR_CLOSE, assets=["BTC/USDT"], horizons=[7], loader=md.loader())
        assert [k[2] for k in s.keys] == [BAR_CLOSE]  # closed exactly now: usable
        before = _checksum(conn)
        # delete everything after the bar: publishing the same as_of changes nothing (no look-ahead)
        conn.execute("DELETE FROM features.bars WHERE ts >= %s", (BAR_CLOSE,))
        s2 = publish_predictions(conn, as_of=BAR_CLOSE, assets=["BTC/USDT"], horizons=[7], loader=md.loader())
        assert s2.unchanged == 1 and _checksum(conn) == before


def test_skips_with_reasons(db_url):
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect

    with connect() as conn:
        md.load_market(conn)
        # only 7d has a champion; an unknown asset has no bars; stale features are not re-published
        s = publish_predictions(conn, as_of=AS_OF, assets=["BTC/USDT", "DOGE/USDT"], horizons=[7, 14],
                                loader=md.loader(horizons=(7,)))
        reasons = {(k.asset, k.horizon): k.reason for k in s.skipped}
        assert "no complete 1d bar" in reasons[("DOGE/USDT", None)]
        assert reasons[("BTC/USDT", 14)] == "no @champion registered"
        assert s.published == 1
        far = publish_predictions(conn, as_of=datetime(2023, 8, 10, tzinfo=UTC), assets=["BTC/USDT"],
                                  horizons=[7], loader=md.loader())
        assert far.published == 0 and "stale" in far.skipped[0].reason
        # a bar inside the warm-up has too little history for the model
        early = publish_predictions(conn, as_of=datetime(2022, 1, 20, tzinfo=UTC), assets=["BTC/USDT"],
                                    horizons=[7], loader=md.loader())
        assert early.published == 0 and "not eligible" in early.skipped[0].reason
        # a champion trained for another horizon is refused, never published under the wrong one
        wrong = publish_predictions(conn, as_of=AS_OF, assets=["BTC/USDT"], horizons=[7],
                                    loader=lambda a, h: md.champion("lgbm", 14, horizon=7))
        assert wrong.published == 0 and "y_cls_14d" in wrong.skipped[0].reason


def test_bad_input_is_named(db_url):
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect

    with connect() as conn:
        with pytest.raises(ValueError, match="no time zone"):
            publish_predictions(conn, as_of=datetime(2023, 6, 1), loader=md.loader())
        with pytest.raises(ValueError, match="not a timestamp"):
            publish_predictions(conn, as_of="yesterday-ish", loader=md.loader())
        with pytest.raises(ValueError, match="horizons"):
            publish_predictions(conn, as_of=AS_OF, horizons=[0], loader=md.loader())


def test_records_the_champion_once(db_url):
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect

    with connect() as conn:
        md.load_market(conn)
        s = publish_predictions(conn, as_of=AS_OF, loader=md.loader())
        assert s.champions_recorded == 3  # one pooled champion per horizon, whatever the asset count
        champs = conn.execute(
            "SELECT asset, horizon, model_name, version, run_id, unproven, test_accuracy, best_baseline, "
            "beats_baseline, promoted_at FROM ml.champions ORDER BY horizon").fetchall()
        assert [c[:5] for c in champs] == [("pooled", h, f"entasis-pooled-{h}d", "3", f"run{h:04d}")
                                           for h in md.HORIZONS]
        assert all(c[5] is False and c[6] == 0.41 and c[7] == "majority" and c[8] is True for c in champs)
        assert {c[9] for c in champs} == {BAR_CLOSE}
        again = publish_predictions(conn, as_of=AS_OF + timedelta(days=1), loader=md.loader())
        assert again.champions_recorded == 0  # same versions: ml.champions untouched
