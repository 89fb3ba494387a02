"""Real candle CSVs: parse the formats in ``shared/data`` as they are, and replay them on the exchange.

Why: the simulated exchange can serve real, messy history (duplicates, bad rows, two formats in one
file) so the collector's validation and dedup meet the real thing. Parsing never cleans: rows stay
in file order, duplicates and impossible values stay, unparseable cells become NaN/NaT.

Formats (:func:`load_candle_csv`), recognised by the header:

* yanniedog ``timestamp,open,high,low,close,volume`` (timestamp = open time, date or datetime), and
  the same shape with ``ts``/``open_time`` first, extra columns and an optional ``quote_volume``
  (what the pipeline itself writes; numeric times are epoch ms or s);
* CryptoDataDownload ``unix,date,symbol,open,high,low,close,Volume <BASE>,Volume <QUOTE>[,tradecount]``
  in any letter case, optionally under the ``https://www.CryptoDataDownload.com`` banner line; the
  unix column may mix milliseconds and (older rows) float seconds in one file; a row without a
  usable unix value falls back to its date (``2017-08-17 04-AM`` style included);
* Kaggle CoinMarketCap ``SNo,Name,Symbol,Date,High,Low,Open,Close,Volume,Marketcap``: daily, the
  candle opens at 00:00 of ``Date``; its volume is in USD, so ``quote_volume`` = Volume and
  ``volume`` = Volume / Close.

File names map to (symbol, timeframe) for replay (:class:`ReplayStore`):

* ``BTCUSDT_1d.csv`` -> BTC/USDT 1d (yanniedog; the quote is the longest known quote suffix);
* ``Binance_BTCUSDT_1h.csv`` / ``_d.csv`` / ``_minute.csv`` -> BTC/USDT 1h / 1d / 1m (CryptoDataDownload);
* ``coin_Bitcoin.csv`` -> <Symbol column>/USD 1d (Kaggle).

Other files are ignored; two files for the same symbol and timeframe are an error naming both.
"""

from __future__ import annotations

import csv
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.domain import TIMEFRAME_MS
from entasis.sim.series import ArraySource

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

CANDLE_COLUMNS = ["ts", "open", "high", "low", "close", "volume", "quote_volume"]
KNOWN_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "TRY", "BTC", "ETH", "BNB")
CDD_BANNER = "https://www.cryptodatadownload.com"

_YANNIEDOG = re.compile(r"^([A-Z0-9]+)_(\d+[mhdw])\.csv$")
_CDD = re.compile(r"^([A-Za-z]+)_([A-Z0-9]+)_(d|minute|\d+[mhd])\.csv$")
_KAGGLE = re.compile(r"^coin_(.+)\.csv$")


class ReplayFormatError(ValueError):
    """A candle file we cannot read; the message names the file."""


def split_pair(pair: str) -> str:
    """'BTCUSDT' -> 'BTC/USDT' (longest known quote suffix); 'BTC/USDT' stays."""
    pair = pair.strip().upper()
    if "/" in pair:
        return pair
    for q in sorted(KNOWN_QUOTES, key=len, reverse=True):
        if pair.endswith(q) and len(pair) > len(q):
            return f"{pair[: -len(q)]}/{q}"
    raise ReplayFormatError(f"cannot split {pair!r} into base and quote (known quotes: {', '.join(KNOWN_QUOTES)})")


def _header(path: Path) -> tuple[list[str], int, list[str] | None]:
    """(lower-cased header, lines to skip before it, first data row)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        skip = 0
        row = next(reader, None)
        if row and row[0].strip().lower().startswith(CDD_BANNER):
            skip = 1
            row = next(reader, None)
        if row is None:
            raise ReplayFormatError(f"{path}: empty file, expected a candle CSV header")
        first = next(reader, None)
    return [c.strip().lower() for c in row], skip, first


def _detect(header: list[str]) -> str | None:
    if header == ["timestamp", "open", "high", "low", "close", "volume"]:
        return "yanniedog"
    if header and header[0] in ("ts", "timestamp", "open_time") and \
            {"open", "high", "low", "close", "volume"} <= set(header):
        return "generic"
    if header[:7] == ["unix", "date", "symbol", "open", "high", "low", "close"] and len(header) >= 9 \
            and header[7].startswith("volume") and header[8].startswith("volume"):
        return "cdd"
    if header == ["sno", "name", "symbol", "date", "high", "low", "open", "close", "volume", "marketcap"]:
        return "kaggle_cmc"
    return None


def _num(s: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.to_numeric(s, errors="coerce").astype("float64")


def _dates(s: pd.Series) -> pd.Series:
    import pandas as pd

    out = pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")
    miss = out.isna() & s.notna()
    if miss.any():  # CryptoDataDownload's old rows: '2017-08-17 04-AM'
        out[miss] = pd.to_datetime(s[miss], utc=True, errors="coerce", format="%Y-%m-%d %I-%p")
    return out


def load_candle_csv(path: str | Path) -> pd.DataFrame:
    """Parse a candle CSV of any supported format into ts/open/high/low/close/volume/quote_volume.

    Nothing is cleaned (order, duplicates and bad rows are kept). ``df.attrs`` holds ``format``,
    ``symbol`` (when the file says), ``timeframe`` (when the name says) and ``path``.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ReplayFormatError(f"{p}: no such file")
    header, skip, first = _header(p)
    fmt = _detect(header)
    if fmt is None:
        raise ReplayFormatError(
            f"{p}: unknown candle CSV format (header {header}); expected yanniedog "
            "'timestamp,open,high,low,close,volume' (or ts first, optional quote_volume), "
            "CryptoDataDownload 'unix,date,symbol,open,high,low,close,"
            "Volume <BASE>,Volume <QUOTE>,tradecount' or Kaggle CMC 'SNo,Name,Symbol,Date,High,Low,Open,Close,"
            "Volume,Marketcap'"
        )
    raw = pd.read_csv(p, skiprows=skip, dtype=str, keep_default_na=False, na_values=[""])
    raw.columns = [c.strip().lower() for c in raw.columns]
    symbol = None
    if fmt in ("yanniedog", "generic"):
        tcol = raw[header[0]]
        as_num = _num(tcol)
        if as_num.notna().all() and len(as_num):  # epoch milliseconds or seconds
            ts = pd.to_datetime(as_num.where(as_num >= 1e11, as_num * 1000.0), unit="ms", utc=True, errors="coerce")
        else:
            ts = _dates(tcol)
        vol = _num(raw["volume"])
        qv = _num(raw["quote_volume"]) if "quote_volume" in raw.columns else pd.Series(np.nan, index=raw.index)
    elif fmt == "cdd":
        unix = _num(raw["unix"])
        ms = unix.where(unix >= 1e11, unix * 1000.0)
        ms = ms.where(ms < 1e14, ms / 1000.0)  # microseconds in some newer files
        ts = pd.to_datetime(ms, unit="ms", utc=True, errors="coerce")
        ts = ts.where(ts.notna(), _dates(raw["date"]))
        vol = _num(raw[header[7]])
        qv = _num(raw[header[8]])
        if first is not None and len(first) > 2 and first[2].strip():
            symbol = split_pair(first[2])
    else:
        ts = _dates(raw["date"]).dt.floor("D")
        qv = _num(raw["volume"])
        vol = qv / _num(raw["close"])
        if first is not None and len(first) > 2 and first[2].strip():
            symbol = f"{first[2].strip().upper()}/USD"
    df = pd.DataFrame({
        "ts": ts, "open": _num(raw["open"]), "high": _num(raw["high"]), "low": _num(raw["low"]),
        "close": _num(raw["close"]), "volume": vol, "quote_volume": qv,
    })
    df.attrs.update({"format": fmt, "symbol": symbol, "timeframe": _timeframe_from_name(p.name), "path": str(p)})
    if df.attrs["timeframe"] is None and fmt == "kaggle_cmc":
        df.attrs["timeframe"] = "1d"
    return df


def _timeframe_from_name(name: str) -> str | None:
    m = _YANNIEDOG.match(name)
    if m:
        return m.group(2)
    m = _CDD.match(name)
    if m:
        tf = m.group(3)
        return {"d": "1d", "minute": "1m"}.get(tf, tf)
    if _KAGGLE.match(name):
        return "1d"
    return None


def _symbol_from_name(p: Path) -> str | None:
    """Symbol as the file name (or, for Kaggle, its first row) says."""
    m = _YANNIEDOG.match(p.name)
    if m:
        return split_pair(m.group(1))
    m = _CDD.match(p.name)
    if m:
        return split_pair(m.group(2))
    if _KAGGLE.match(p.name):
        header, _, first = _header(p)
        if _detect(header) == "kaggle_cmc" and first and len(first) > 2:
            return f"{first[2].strip().upper()}/USD"
    return None


@dataclass
class ReplayStore:
    """Candle files indexed by (symbol, timeframe), parsed on first use."""

    files: dict[tuple[str, str], Path]
    _loaded: dict[tuple[str, str], ArraySource] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_dir(cls, root: Path) -> ReplayStore:
        """Index every candle file under ``root`` (recursively) by the naming rules above."""
        if not root.is_dir():
            raise ReplayFormatError(f"replay directory {root} does not exist")
        files: dict[tuple[str, str], Path] = {}
        for p in sorted(root.rglob("*.csv")):
            tf = _timeframe_from_name(p.name)
            if tf is None or tf not in TIMEFRAME_MS:
                log.debug("replay: ignoring %s (name matches no candle file rule)", p)
                continue
            sym = _symbol_from_name(p)
            if sym is None:
                continue
            key = (sym, tf)
            if key in files:
                raise ReplayFormatError(f"replay: {files[key]} and {p} both hold {sym} {tf}; keep one")
            files[key] = p
        if not files:
            raise ReplayFormatError(f"replay directory {root} holds no candle CSVs named like BTCUSDT_1d.csv, "
                                    "Binance_BTCUSDT_1h.csv or coin_Bitcoin.csv")
        return cls(files)

    @property
    def symbols(self) -> list[str]:
        return sorted({s for s, _ in self.files})

    def has_symbol(self, symbol: str) -> bool:
        return any(s == symbol for s, _ in self.files)

    def source(self, symbol: str, timeframe: str) -> ArraySource | None:
        """The file's rows sorted by open time (stable: duplicates keep file order); None if no file.

        Rows without a usable timestamp cannot be placed in time and are not served.
        """
        key = (symbol, timeframe)
        if key not in self.files:
            return None
        with self._lock:
            hit = self._loaded.get(key)
            if hit is None:
                df = load_candle_csv(self.files[key])
                df = df[df["ts"].notna()]
                order = np.argsort(df["ts"].to_numpy(), kind="stable")
                ts = (df["ts"].astype("datetime64[ms, UTC]").astype("int64").to_numpy())[order]
                cols: dict[str, Any] = {c: df[c].to_numpy(dtype=np.float64)[order] for c in CANDLE_COLUMNS[1:]}
                hit = ArraySource(ts.astype(np.int64), cols, TIMEFRAME_MS[timeframe], None)
                self._loaded[key] = hit
            return hit
