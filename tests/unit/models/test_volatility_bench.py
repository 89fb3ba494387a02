"""Smoke run of bench/volatility.py at tiny sizes: every model scored, the JSON line well formed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.bench_loader import load_bench
from tests.unit.models.test_volatility_har import write_candle_csvs


def _bench():
    return load_bench("volatility")


def test_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_candle_csvs(tmp_path, 700, 20, 0.02)
    out = tmp_path / "res.json"
    res = _bench().main(["--data", str(tmp_path), "--horizons", "7", "--start", "2020-03-01", "--split",
                         "2020-06-01", "--end", "2020-09-01", "--lgbm-every", "3", "--lgbm-trees", "10",
                         "--n-jobs", "1", "--garch-dists", "normal", "--n-boot", "50", "--json", str(out),
                         "--forecasts", str(tmp_path / "fc.csv")])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["bench"] == "volatility" and isinstance(last["met"], bool)
    assert {"metric", "reference", "ratio", "target"} <= set(last)
    assert np.isclose(last["ratio"], last["metric"] / last["reference"])
    # met from the figures: the chosen forecast's QLIKE difference to each GARCH/EWMA reference has its CI below 0
    refs = [r for r in ("garch", "garch_t", "ewma") if r in res["confirm"][7]["qlike"]]
    assert last["met"] is (bool(refs) and all(
        res["diff_confirm"][f"7d:{res['chosen'][7]}-{r}:qlike"]["below_0"] for r in refs))
    saved = json.loads(out.read_text())
    assert saved["assets"] == ["AAA/USDT", "BBB/USDT"]
    q = res["confirm"][7]["qlike"]
    assert {"har_pk", "har_pk_q", "garch", "ewma", "naive", "lgbm"} <= set(q)
    assert all(np.isfinite(v) and v >= 0 for v in q.values())
    assert res["confirm"][7]["n"] > 100 and res["chosen"][7] in q
    # scoring saved forecasts again (how separate runs are merged) gives the same figures
    capsys.readouterr()
    again = _bench().main(["--score-only", str(tmp_path / "fc.csv"), "--start", "2020-03-01", "--split",
                           "2020-06-01", "--end", "2020-09-01", "--n-boot", "50"])
    assert again["confirm"][7]["qlike"] == pytest.approx(q, rel=1e-9)
    assert again["chosen"] == res["chosen"]
