"""Shared test data for the publish stage: simulated candles, their real features, tiny real models.

Candles come from the seeded market simulator, features and labels from the one feature definition
(``entasis.features.compute``), models are real LightGBM / RandomForest fits on those rows; nothing is
mocked. Built once per process and cached (all pure Python objects); tests load them into their own
fresh database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.models.base import Model
    from entasis.publish.champions import Champion, ChampionLoader

EXCHANGE = "binance"
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
HORIZONS = (7, 14, 30)
START, END = "2022-01-01", "2023-08-01"
# Training sees only labels known at TRAIN_END; publishing happens after it.
TRAIN_END = datetime(2023, 4, 1, tzinfo=UTC)
FEATURES = ["ret_1", "log_ret_1", "hl_spread", "rsi_14", "macd_hist_rel", "bb_pctb", "ema_20_rel",
            "sma_50_rel", "volume_ma_20_ratio", "rvol_20", "atr_14_rel"]


@lru_cache(maxsize=1)
def candles() -> pd.DataFrame:
    """Daily spot candles for SYMBOLS, market.candles-shaped."""
    import pandas as pd

    from entasis.sim.market import MarketSim

    sim = MarketSim(seed=11, symbols=list(SYMBOLS), start=START, end=END)
    frames = []
    for sym in SYMBOLS:
        df = sim.candles(sym, "1d")
        df.insert(0, "timeframe", "1d")
        df.insert(0, "symbol", sym)
        df.insert(0, "exchange", EXCHANGE)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@lru_cache(maxsize=1)
def bars() -> pd.DataFrame:
    """features.bars rows computed from candles() by the real feature code (labels for 7/14/30d)."""
    import pandas as pd

    from entasis.features.compute import LabelParams, compute

    params = LabelParams(horizons=HORIZONS, neutral_band=0.02, band_mode="fixed")
    c = candles()
    out = [compute(c[c["symbol"] == s], timeframe="1d", exchange=EXCHANGE, symbol=s, labels=params)
           for s in SYMBOLS]
    return pd.concat(out, ignore_index=True)


def training_rows(horizon: int) -> pd.DataFrame:
    """Rows whose label was known at TRAIN_END (bar close + h days <= TRAIN_END)."""
    b = bars()
    known = b["ts"] + timedelta(days=1 + horizon) <= TRAIN_END
    return b[known & ~b["warmup"]].reset_index(drop=True)


@lru_cache(maxsize=8)
def model(kind: str, horizon: int) -> Model:
    """A small, real, pooled model for one horizon: 'lgbm', 'rf', an 'ensemble' of both, or 'boosted'
    (an ensemble of LightGBM and XGBoost)."""
    from entasis.domain import target_column
    from entasis.models.factory import build_model

    rows = training_rows(horizon)
    tgt = target_column(horizon)
    if kind == "lgbm":
        m = build_model("lgbm", features=FEATURES, n_estimators=40, num_leaves=7, min_data_in_leaf=10,
                        early_stopping_rounds=0, n_jobs=1, device="cpu")
    elif kind == "rf":
        m = build_model("rf", features=FEATURES, n_estimators=30, max_depth=5, min_samples_leaf=10, n_jobs=1)
    elif kind == "ensemble":
        m = build_model("ensemble", members=("lgbm", "rf"), weights={"lgbm": 0.6, "rf": 0.4}, calibrate=False,
                        features=FEATURES,
                        member_params={"lgbm": {"n_estimators": 40, "num_leaves": 7, "min_data_in_leaf": 10,
                                                "early_stopping_rounds": 0, "n_jobs": 1, "device": "cpu"},
                                       "rf": {"n_estimators": 30, "max_depth": 5, "min_samples_leaf": 10,
                                              "n_jobs": 1}})
    elif kind == "boosted":  # an ensemble of the two boosters: quick to save / load through MLflow
        m = build_model("ensemble", members=("lgbm", "xgb"), weights={"lgbm": 0.5, "xgb": 0.5}, calibrate=False,
                        features=FEATURES,
                        member_params={"lgbm": {"n_estimators": 40, "num_leaves": 7, "min_data_in_leaf": 10,
                                                "early_stopping_rounds": 0, "n_jobs": 1, "device": "cpu"},
                                       "xgb": {"n_estimators": 40, "max_depth": 3, "early_stopping_rounds": 0,
                                               "n_jobs": 1, "device": "cpu"}})
    else:
        raise ValueError(kind)
    return m.fit(rows, tgt)


def champion(kind: str, trained_for: int, **kw: Any) -> Champion:
    """A pooled test champion whose model was trained for horizon ``trained_for``; fields overridable."""
    from entasis.publish.champions import POOLED, Champion

    horizon = trained_for
    defaults: dict[str, Any] = {
        "model_name": f"entasis-pooled-{horizon}d", "version": "3", "horizon": horizon, "asset": POOLED,
        "run_id": f"run{horizon:04d}", "trained_at": TRAIN_END, "unproven": False, "test_accuracy": 0.41,
        "best_baseline": "majority", "best_baseline_accuracy": 0.38, "beats_baseline": True,
    }
    defaults.update(kw)
    return Champion(model=model(kind, trained_for), **defaults)


def loader(kind: str = "lgbm", horizons: tuple[int, ...] = HORIZONS) -> ChampionLoader:
    """(asset, horizon) -> the pooled test champion, None for horizons not listed."""
    champs = {h: champion(kind, h) for h in horizons}

    def load(asset: str, horizon: int) -> Champion | None:
        return champs.get(horizon)

    return load


def load_market(conn: psycopg.Connection, *, until: datetime | None = None) -> None:
    """Write candles() and bars() (bars opening before ``until`` when given) into this database."""
    from entasis.store.market import write_candles
    from entasis.store.upsert import upsert_frame

    c, b = candles(), bars()
    if until is not None:
        c, b = c[c["ts"] < until], b[b["ts"] < until]
    write_candles(conn, c)
    upsert_frame(conn, "features.bars", b, ["exchange", "symbol", "timeframe", "ts"])
