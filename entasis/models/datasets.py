"""Turning features.bars rows into what models eat, without look-ahead.

* :func:`split_frame` cuts a time-ordered train / validation / test split with a purge and an embargo of
  ``h`` days at every boundary (labels at t use prices up to t+h, so the last h days before a boundary
  would otherwise see the next segment).
* :class:`Context` puts every row given in one call into one (symbol, ts)-sorted array so that windows,
  lags and rolling statistics look strictly backward, and marks which rows are samples.
* :class:`Standardizer` is fit on training samples only and saved (``.npz``) with the model.
* :func:`windows` (LSTM) and :func:`tabular` (trees) build each model's view from the scaled context.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from entasis.models.base import ModelError, check_frame, label_array

if TYPE_CHECKING:
    import pandas as pd

HISTORY = "history"


# -- splits --------------------------------------------------------------------------------------
@dataclass
class Split:
    """Sample rows of each segment plus the full frame (usable as backward-only context)."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    frame: pd.DataFrame
    horizon: int
    boundaries: dict[str, pd.Timestamp] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"horizon": self.horizon}
        for name in ("train", "valid", "test"):
            part = getattr(self, name)
            out[f"{name}_rows"] = len(part)
            out[f"{name}_start"] = str(part["ts"].min()) if len(part) else None
            out[f"{name}_end"] = str(part["ts"].max()) if len(part) else None
        return out


def split_frame(frame: pd.DataFrame, horizon: int, *, fractions: Sequence[float] = (0.70, 0.15, 0.15),
                embargo_days: int | None = None, bar: str = "1D") -> Split:
    """Time-ordered 70/15/15 split over the frame's distinct timestamps, purged and embargoed.

    The cut points are shared by all symbols (a pooled model's segments line up in time). At each
    boundary ``B`` between an earlier segment A and a later segment C:

    * purge: A keeps only rows with ``ts + h·bar < B`` (their labels end before C starts);
    * embargo: C keeps only rows with ``ts >= B + embargo·bar`` (default ``embargo = h``).

    So ``max(A.ts) + h·bar < B <= min(C.ts) - embargo·bar``. Dropped rows stay in ``frame`` and may
    serve as backward context for later rows' windows; they are never samples of another segment.
    """
    import pandas as pd

    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ModelError(f"fractions must be three positive numbers summing to 1; got {tuple(fractions)}")
    if horizon <= 0:
        raise ModelError(f"horizon must be a positive number of bars; got {horizon}")
    if "ts" not in frame.columns:
        raise ModelError("frame is missing column: ts")
    emb = horizon if embargo_days is None else int(embargo_days)
    if emb < 0:
        raise ModelError(f"embargo_days must be >= 0; got {emb}")
    step = pd.Timedelta(bar)
    ts = pd.to_datetime(frame["ts"], utc=True)
    uniq = np.sort(ts.unique())
    if len(uniq) < 10:
        raise ModelError(f"need at least 10 distinct timestamps to split; got {len(uniq)}")
    n = len(uniq)
    i1 = int(round(n * fractions[0]))
    i2 = int(round(n * (fractions[0] + fractions[1])))
    b1, b2 = pd.Timestamp(uniq[i1]), pd.Timestamp(uniq[i2])
    gap_before = horizon * step
    gap_after = emb * step
    train = frame[ts + gap_before < b1]
    valid = frame[(ts >= b1 + gap_after) & (ts + gap_before < b2)]
    test = frame[ts >= b2 + gap_after]
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        if part.empty:
            raise ModelError(
                f"the {name} segment is empty after a purge/embargo of {horizon}/{emb} bars; "
                f"the frame spans only {n} timestamps"
            )
    return Split(train=train, valid=valid, test=test, frame=frame, horizon=horizon,
                 boundaries={"valid_start": b1, "test_start": b2})


# -- context -------------------------------------------------------------------------------------
@dataclass
class Context:
    """All rows of one call, sorted by (symbol, ts); ``part`` says which input each row came from."""

    symbols: np.ndarray          # object array of symbol per row
    ts: np.ndarray               # datetime64[ns] per row (UTC)
    values: np.ndarray           # float64 (n_rows, n_features), raw (unscaled) features
    pos: np.ndarray              # int64 bar position within the symbol (0 = first bar in context)
    warmup: np.ndarray           # bool
    part: np.ndarray             # object: part name or "history"
    orig: np.ndarray             # object: the row's index label in its input frame
    target: np.ndarray | None    # float64 labels (NaN = missing) or None

    def samples(self, part: str, min_history: int, *, labelled: bool = False) -> np.ndarray:
        """Context positions of the eligible rows of ``part`` (enough history, not warmup[, labelled])."""
        m = (self.part == part) & (self.pos >= min_history - 1) & ~self.warmup
        if labelled:
            if self.target is None:
                raise ModelError("no target column in this context")
            m &= ~np.isnan(self.target)
        return np.flatnonzero(m)

    def positions_of(self, part: str, index: pd.Index, sample_pos: np.ndarray) -> np.ndarray:
        """Map context positions of ``part`` samples to integer positions in that part's input index."""
        labels = self.orig[sample_pos]
        got = index.get_indexer(labels)
        if (got < 0).any():  # pragma: no cover - guarded by construction
            raise ModelError(f"internal: {part} rows lost their index")
        return np.asarray(got)


def make_context(parts: Mapping[str, pd.DataFrame | None], features: Sequence[str], *,
                 target: str | None = None, history: pd.DataFrame | None = None,
                 classes: bool = True) -> Context:
    """Concatenate the inputs (history rows duplicating a part's (symbol, ts) are dropped), then sort."""
    import pandas as pd

    feats = list(features)
    pieces = []
    for name, df in parts.items():
        if df is None:
            continue
        check_frame(df, feats, what=name, target=target, classes=classes)
        pieces.append(_piece(df, feats, target, name))
    if not pieces:
        raise ModelError("no rows given")
    if history is not None and len(history):
        check_frame(history, feats, what=HISTORY)
        h = _piece(history, feats, target if target in history.columns else None, HISTORY)
        if target is not None and target not in history.columns:
            h[target] = np.nan
        pieces.insert(0, h)
    df = pd.concat(pieces, ignore_index=True)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    if len(pieces) > 1 or history is not None:
        is_hist = (df["_part"] == HISTORY).to_numpy()
        key_dup = df.duplicated(["symbol", "ts"], keep=False).to_numpy()
        df = df[~(is_hist & key_dup)]
    dup = df.duplicated(["symbol", "ts"], keep=False)
    if dup.any():
        r = df[dup].iloc[0]
        raise ModelError(f"duplicate (symbol, ts) = ({r['symbol']}, {r['ts']}) in the rows given "
                         "(two exchanges or timeframes mixed, or a row repeated)")
    df = df.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    sym = df["symbol"].astype(str).to_numpy(dtype=object)
    pos = df.groupby("symbol", sort=False).cumcount().to_numpy(dtype=np.int64)
    tgt = None
    if target is not None:
        tgt = label_array(df[target])
    return Context(
        symbols=sym,
        ts=df["ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]"),
        values=df[feats].to_numpy(dtype=np.float64, na_value=np.nan),
        pos=pos,
        warmup=df["_warmup"].to_numpy(dtype=bool),
        part=df["_part"].to_numpy(dtype=object),
        orig=df["_orig"].to_numpy(dtype=object),
        target=tgt,
    )


def _piece(df: pd.DataFrame, feats: list[str], target: str | None, name: str) -> pd.DataFrame:
    import pandas as pd

    cols = ["symbol", "ts", *feats] + ([target] if target and target in df.columns else [])
    out = df[cols].copy()
    for c in feats:
        if not pd.api.types.is_numeric_dtype(out[c]) or pd.api.types.is_bool_dtype(out[c]):
            out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    out["_warmup"] = df["warmup"].fillna(False).astype(bool).to_numpy() if "warmup" in df.columns else False
    out["_part"] = name
    out["_orig"] = pd.Series(list(df.index), index=out.index, dtype=object)
    return out


# -- scaling -------------------------------------------------------------------------------------
class Standardizer:
    """Per-feature mean / std from training samples; NaN becomes 0 (the training mean) after scaling."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> None:
        self.mean = mean
        self.std = std

    def fit(self, x: np.ndarray) -> Standardizer:
        if len(x) == 0:
            raise ModelError("cannot fit a scaler on zero training rows")
        with np.errstate(all="ignore"):
            mean = np.nanmean(x, axis=0)
            std = np.nanstd(x, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        self.mean, self.std = mean, std
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise ModelError("scaler is not fitted")
        if x.shape[1] != len(self.mean):
            raise ModelError(f"scaler was fit on {len(self.mean)} features, got {x.shape[1]}")
        z = (x - self.mean) / self.std
        z[~np.isfinite(z)] = 0.0
        return np.clip(z, -20.0, 20.0)

    def save(self, path: Path) -> None:
        if self.mean is None or self.std is None:
            raise ModelError("scaler is not fitted")
        np.savez(path, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: Path) -> Standardizer:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["mean"].astype(np.float64), z["std"].astype(np.float64))


# -- views ---------------------------------------------------------------------------------------
def windows(z: np.ndarray, ends: np.ndarray, seq_len: int) -> np.ndarray:
    """(n, seq_len, f) windows of scaled context ``z`` ending at positions ``ends`` (inclusive)."""
    idx = ends[:, None] + np.arange(-seq_len + 1, 1)[None, :]
    return z[idx]


def asset_onehot(symbols: np.ndarray, assets: Sequence[str]) -> np.ndarray:
    """One-hot over the fitted assets; an unseen symbol gets all zeros."""
    lookup = {a: i for i, a in enumerate(assets)}
    out = np.zeros((len(symbols), len(assets)), dtype=np.float32)
    for r, s in enumerate(symbols):
        j = lookup.get(s)
        if j is not None:
            out[r, j] = 1.0
    return out


def tabular(z: np.ndarray, ends: np.ndarray, *, lags: Sequence[int], roll: Sequence[int]) -> np.ndarray:
    """Last-bar features, lagged copies and rolling mean / std over ``roll`` bars, at rows ``ends``.

    ``ends`` must have at least ``max(lags)+1`` and ``max(roll)`` bars of their own symbol before and
    including them (guaranteed by eligibility), so nothing crosses a symbol boundary.
    """
    blocks = [z[ends]]
    for k in lags:
        blocks.append(z[ends - k])
    if roll:
        cs = np.vstack([np.zeros((1, z.shape[1])), np.cumsum(z, axis=0)])
        cs2 = np.vstack([np.zeros((1, z.shape[1])), np.cumsum(z * z, axis=0)])
        for w in roll:
            s = cs[ends + 1] - cs[ends + 1 - w]
            s2 = cs2[ends + 1] - cs2[ends + 1 - w]
            mean = s / w
            var = np.maximum(s2 / w - mean * mean, 0.0)
            blocks.append(mean)
            blocks.append(np.sqrt(var))
    return np.hstack(blocks).astype(np.float32)


def tabular_min_history(lags: Sequence[int], roll: Sequence[int]) -> int:
    """Bars of its own symbol (itself included) a row needs for its lagged and rolling columns."""
    return max([1] + [k + 1 for k in lags] + list(roll))


def tabular_names(features: Sequence[str], *, lags: Sequence[int], roll: Sequence[int]) -> list[str]:
    names = list(features)
    for k in lags:
        names += [f"{f}_lag{k}" for f in features]
    for w in roll:
        names += [f"{f}_mean{w}" for f in features] + [f"{f}_std{w}" for f in features]
    return names


def class_weights(y: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """'Balanced' weights n / (k · count); a class absent from training gets weight 0."""
    counts = np.bincount(y.astype(np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return w


def data_hash(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """A stable sha256 of the training snapshot (rows sorted by symbol, ts) for lineage."""
    import pandas as pd

    cols = [c for c in ["symbol", "ts", *columns] if c in frame.columns]
    df = frame[cols].sort_values([c for c in ("symbol", "ts") if c in cols], kind="stable")
    h = pd.util.hash_pandas_object(df, index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()


# -- shared fit / predict preparation ------------------------------------------------------------
@dataclass
class Prepared:
    """What a feature model needs for one fit / predict call: the context, scaled, and sample rows."""

    ctx: Context
    z: np.ndarray                 # scaled context features, float32
    samples: dict[str, np.ndarray]  # part -> context positions of eligible samples


def tabular_matrix(prep: Prepared, pos: np.ndarray, *, lags: Sequence[int], roll: Sequence[int],
                   assets: Sequence[str]) -> np.ndarray:
    """The tabular view (:func:`tabular`) of context positions ``pos``, then the one-hot over ``assets``
    (none when empty): the matrix the tree models and the LightGBM volatility model train and predict on."""
    x = tabular(prep.z, pos, lags=lags, roll=roll)
    if assets:
        x = np.hstack([x, asset_onehot(prep.ctx.symbols[pos], assets)])
    return x


def prepare_fit(*, features: Sequence[str], scaler: Standardizer, min_history: int, train: pd.DataFrame,
                target: str, valid: pd.DataFrame | None, history: pd.DataFrame | None,
                classes: bool = True) -> Prepared:
    """Build the context, fit ``scaler`` on the training rows only, find labelled eligible samples."""
    ctx = make_context({"train": train, "valid": valid}, features, target=target, history=history,
                       classes=classes)
    train_rows = (ctx.part == "train") & ~ctx.warmup
    if not train_rows.any():
        raise ModelError("train has no rows outside the warmup period")
    scaler.fit(ctx.values[train_rows])
    z = scaler.transform(ctx.values).astype(np.float32)
    samples = {"train": ctx.samples("train", min_history, labelled=True)}
    if not len(samples["train"]):
        raise ModelError(f"train has no labelled row with {min_history} bars of history outside warmup")
    if valid is not None:
        samples["valid"] = ctx.samples("valid", min_history, labelled=True)
    return Prepared(ctx=ctx, z=z, samples=samples)


def prepare_predict(*, features: Sequence[str], scaler: Standardizer, min_history: int, rows: pd.DataFrame,
                    history: pd.DataFrame | None) -> Prepared:
    ctx = make_context({"rows": rows}, features, history=history)
    z = scaler.transform(ctx.values).astype(np.float32)
    return Prepared(ctx=ctx, z=z, samples={"rows": ctx.samples("rows", min_history)})
