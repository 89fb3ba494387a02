"""Rules that market rows must satisfy, as vectorized checks (one definition for store and collectors).

``find_violations`` returns one row per (row, rule) broken, so a collector can quarantine bad
rows and keep the good ones; ``require_valid`` turns any violation into an error that names the
row and the rule, for writers that must reject a whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

Rule = Callable[["pd.DataFrame"], "pd.Series"]


class ValidationFailed(ValueError):
    """A batch broke a rule; nothing from it was written."""

    def __init__(self, table: str, violations: pd.DataFrame) -> None:
        self.table = table
        self.violations = violations
        shown = []
        for _, v in violations.head(5).iterrows():
            shown.append(f"row {v['row']} ({v['key']}): {v['rule']}")
        more = f" (+{len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(f"{table}: {len(violations)} invalid row(s), nothing written: " + "; ".join(shown) + more)


def _num(df: pd.DataFrame, cols: Iterable[str]) -> pd.DataFrame:
    import pandas as pd

    return df[list(cols)].apply(pd.to_numeric, errors="coerce")


def _nan_rule(cols: list[str]) -> Rule:
    def rule(df: pd.DataFrame) -> pd.Series:
        present = [c for c in cols if c in df.columns]
        return _num(df, present).isna().any(axis=1)

    return rule


def _naive_ts(col: str) -> Rule:
    def rule(df: pd.DataFrame) -> pd.Series:
        import pandas as pd

        s = df[col]
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            return s.isna()
        if pd.api.types.is_datetime64_any_dtype(s):
            return pd.Series(True, index=df.index)
        return s.map(lambda v: getattr(v, "tzinfo", None) is None)

    return rule


CANDLE_PRICE_COLS = ["open", "high", "low", "close"]

CANDLE_RULES: dict[str, Rule] = {
    "timestamp must be timezone-aware (UTC)": _naive_ts("ts"),
    "NaN or non-numeric value in open/high/low/close/volume": _nan_rule([*CANDLE_PRICE_COLS, "volume"]),
    "non-positive price": lambda df: (_num(df, CANDLE_PRICE_COLS) <= 0).any(axis=1),
    "high < max(open, close)": lambda df: _num(df, ["high"])["high"] < _num(df, ["open", "close"]).max(axis=1),
    "low > min(open, close)": lambda df: _num(df, ["low"])["low"] > _num(df, ["open", "close"]).min(axis=1),
    "negative volume": lambda df: _num(df, ["volume"])["volume"] < 0,
}

FUNDING_RULES: dict[str, Rule] = {
    "timestamp must be timezone-aware (UTC)": _naive_ts("ts"),
    "NaN or non-numeric funding_rate": _nan_rule(["funding_rate"]),
    "funding_rate outside ±100%": lambda df: _num(df, ["funding_rate"])["funding_rate"].abs() > 1,
}

OPEN_INTEREST_RULES: dict[str, Rule] = {
    "timestamp must be timezone-aware (UTC)": _naive_ts("ts"),
    "NaN or non-numeric open_interest": _nan_rule(["open_interest"]),
    "negative open_interest": lambda df: _num(df, ["open_interest"])["open_interest"] < 0,
}

OPTION_RULES: dict[str, Rule] = {
    "timestamp must be timezone-aware (UTC)": _naive_ts("snapshot_ts"),
    "non-positive strike": lambda df: ~(_num(df, ["strike"])["strike"] > 0),
    "kind must be 'call' or 'put'": lambda df: ~df["kind"].isin(["call", "put"]),
    "negative bid or ask": lambda df: (_num(df, ["bid", "ask"]) < 0).any(axis=1),
    "bid above ask": lambda df: _num(df, ["bid"])["bid"] > _num(df, ["ask"])["ask"],
}


def find_violations(
    df: pd.DataFrame,
    rules: dict[str, Rule],
    *,
    key_cols: Iterable[str] = ("symbol", "ts"),
    known_symbols: Iterable[str] | None = None,
) -> pd.DataFrame:
    """All (row, rule) pairs broken in ``df``: columns row (index label), key, rule."""
    import pandas as pd

    key_cols = [c for c in key_cols if c in df.columns]
    masks: list[tuple[str, pd.Series]] = [(name, fn(df).fillna(True).astype(bool)) for name, fn in rules.items()]
    if known_symbols is not None and "symbol" in df.columns:
        known = set(known_symbols)
        masks.append(("unknown symbol", ~df["symbol"].isin(known)))
    out = []
    for name, mask in masks:
        bad = df.index[mask.to_numpy()]
        if len(bad):
            keys = df.loc[bad, key_cols].astype(str).agg(" ".join, axis=1) if key_cols else pd.Series("", index=bad)
            out.append(pd.DataFrame({"row": bad, "key": keys.to_numpy(), "rule": name}))
    if not out:
        return pd.DataFrame({"row": pd.Series(dtype=object), "key": pd.Series(dtype=str), "rule": pd.Series(dtype=str)})
    return pd.concat(out, ignore_index=True)


def require_valid(
    df: pd.DataFrame,
    rules: dict[str, Rule],
    table: str,
    *,
    key_cols: Iterable[str] = ("symbol", "ts"),
    known_symbols: Iterable[str] | None = None,
) -> None:
    v = find_violations(df, rules, key_cols=key_cols, known_symbols=known_symbols)
    if len(v):
        raise ValidationFailed(table, v)
