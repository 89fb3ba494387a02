"""Rules that market rows must satisfy: pandera checks, the one validation engine for store and collectors.

Each rule is a named pandera ``Check`` over the whole frame (True where a row is fine), grouped in a
:class:`RuleSet` per table. ``find_violations`` runs a rule set lazily (every check on every row) and
returns one row per (row, rule) broken, so a collector can quarantine bad rows and keep the good
ones; ``require_valid`` turns any violation into an error that names the row and the rule, for
writers that must reject a whole batch. ``schema_failures`` is the same engine for the collectors'
own pandera schemas (``entasis.collect.quality``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

#: A rule's violation mask: True where a row breaks it (NaN counts as broken).
Mask = Callable[["pd.DataFrame"], "pd.Series"]


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


class RuleSet:
    """Named row rules for one table. The pandera checks are built on first use: pandera is a heavy
    import, and modules that DAGs import at start-up import this one."""

    def __init__(self, rules: dict[str, Mask]) -> None:
        self.rules = dict(rules)
        self._checks: list[pa.Check] | None = None

    @property
    def names(self) -> list[str]:
        return list(self.rules)

    def checks(self) -> list[pa.Check]:
        if self._checks is None:
            self._checks = [_check(name, mask) for name, mask in self.rules.items()]
        return list(self._checks)


def _check(name: str, mask: Mask) -> pa.Check:
    """A pandera check passing the rows ``mask`` does not flag; NaN values are judged, not skipped."""
    import pandera.pandas as pa

    def passes(df: pd.DataFrame) -> pd.Series:
        return ~mask(df).fillna(True).astype(bool)

    return pa.Check(passes, name=name, ignore_na=False)


def _num(df: pd.DataFrame, cols: Iterable[str]) -> pd.DataFrame:
    import pandas as pd

    return df[list(cols)].apply(pd.to_numeric, errors="coerce")


def _nan_rule(cols: list[str]) -> Mask:
    def rule(df: pd.DataFrame) -> pd.Series:
        present = [c for c in cols if c in df.columns]
        return _num(df, present).isna().any(axis=1)

    return rule


def _naive_ts(col: str) -> Mask:
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

CANDLE_RULES = RuleSet({
    "timestamp must be timezone-aware (UTC)": _naive_ts("ts"),
    "NaN or non-numeric value in open/high/low/close/volume": _nan_rule([*CANDLE_PRICE_COLS, "volume"]),
    "non-positive price": lambda df: (_num(df, CANDLE_PRICE_COLS) <= 0).any(axis=1),
    "high < max(open, close)": lambda df: _num(df, ["high"])["high"] < _num(df, ["open", "close"]).max(axis=1),
    "low > min(open, close)": lambda df: _num(df, ["low"])["low"] > _num(df, ["open", "close"]).min(axis=1),
    "negative volume": lambda df: _num(df, ["volume"])["volume"] < 0,
})

FUNDING_RULES = RuleSet({
    "timestamp must be timezone-aware (UTC)": _naive_ts("ts"),
    "NaN or non-numeric funding_rate": _nan_rule(["funding_rate"]),
    "funding_rate outside ±100%": lambda df: _num(df, ["funding_rate"])["funding_rate"].abs() > 1,
})

OPEN_INTEREST_RULES = RuleSet({
    "timestamp must be timezone-aware (UTC)": _naive_ts("ts"),
    "NaN or non-numeric open_interest": _nan_rule(["open_interest"]),
    "negative open_interest": lambda df: _num(df, ["open_interest"])["open_interest"] < 0,
})

OPTION_RULES = RuleSet({
    "timestamp must be timezone-aware (UTC)": _naive_ts("snapshot_ts"),
    "non-positive strike": lambda df: ~(_num(df, ["strike"])["strike"] > 0),
    "kind must be 'call' or 'put'": lambda df: ~df["kind"].isin(["call", "put"]),
    "negative bid or ask": lambda df: (_num(df, ["bid", "ask"]) < 0).any(axis=1),
    "bid above ask": lambda df: _num(df, ["bid"])["bid"] > _num(df, ["ask"])["ask"],
})

UNKNOWN_SYMBOL = "unknown symbol"


def _empty_failures() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"row": pd.Series(dtype=object), "rule": pd.Series(dtype=str)})


def schema_failures(schema: pa.DataFrameSchema, df: pd.DataFrame, what: str = "frame") -> pd.DataFrame:
    """(row, rule) pairs for every failed check of ``schema``, in check order (pandera, lazily: all
    checks run). A check that cannot run at all (a missing column, a wrong dtype) is a ValueError
    naming ``what``, the check and the cause: that is a bug in the caller, not a bad row."""
    import pandas as pd
    import pandera.pandas as pa

    if df.empty:
        return _empty_failures()
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases
        structural = fc[fc["index"].isna()]
        if len(structural):
            causes = [f"check {r['check']!r}" + (f" on column {r['column']!r}" if r["column"] else "")
                      + f" could not run ({r['failure_case']})"
                      for r in structural[["column", "check", "failure_case"]].to_dict("records")]
            raise ValueError(f"{what} has the wrong shape: " + "; ".join(causes)) from None
        out = pd.DataFrame({"row": fc["index"].to_numpy(), "rule": fc["check"].astype(str).to_numpy(),
                            "order": pd.to_numeric(fc["check_number"], errors="coerce").fillna(-1).to_numpy()})
        out = out.drop_duplicates(subset=["row", "rule"], ignore_index=True)
        out = out.sort_values("order", kind="stable", ignore_index=True)
        return out[["row", "rule"]]
    return _empty_failures()


def find_violations(
    df: pd.DataFrame,
    rules: RuleSet,
    *,
    key_cols: Iterable[str] = ("symbol", "ts"),
    known_symbols: Iterable[str] | None = None,
    what: str = "batch",
) -> pd.DataFrame:
    """All (row, rule) pairs broken in ``df``: columns row (index label), key, rule; rules in order."""
    import pandas as pd
    import pandera.pandas as pa

    key_cols = [c for c in key_cols if c in df.columns]
    checks = rules.checks()
    if known_symbols is not None and "symbol" in df.columns:
        known = set(known_symbols)
        checks.append(_check(UNKNOWN_SYMBOL, lambda d: ~d["symbol"].isin(known)))
    failed = schema_failures(pa.DataFrameSchema(checks=checks), df, what)
    if failed.empty:
        return pd.DataFrame({"row": pd.Series(dtype=object), "key": pd.Series(dtype=str), "rule": pd.Series(dtype=str)})
    rows = failed["row"].to_numpy()
    if key_cols:
        keys: Any = df.loc[rows, key_cols].map(str).agg(" ".join, axis=1).to_numpy()  # str(NaT) too
    else:
        keys = ""
    return pd.DataFrame({"row": rows, "key": keys, "rule": failed["rule"].to_numpy()})


def require_valid(
    df: pd.DataFrame,
    rules: RuleSet,
    table: str,
    *,
    key_cols: Iterable[str] = ("symbol", "ts"),
    known_symbols: Iterable[str] | None = None,
) -> None:
    v = find_violations(df, rules, key_cols=key_cols, known_symbols=known_symbols, what=table)
    if len(v):
        raise ValidationFailed(table, v)
