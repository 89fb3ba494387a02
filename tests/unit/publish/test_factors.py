"""Top factors: SHAP over tree members (exactness, weighting, aggregation) and the occlusion fallback."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.publish import market_data as md


def _row(symbol: str = "BTC/USDT", back: int = 60):
    b = md.bars()
    s = b[b["symbol"] == symbol].reset_index(drop=True)
    end = len(s) - back
    return s.iloc[[end]], s.iloc[:end]


def _raw(ex, row, hist, c):
    """Contributions before the top-k cut (every base feature)."""
    return ex._shap_contributions(row, hist, c) if ex.members else ex._occlusion(row, hist, c)


def test_random_forest_contributions_add_up_exactly():
    """RF SHAP is in probability: the factors sum to p_c(row) - E[p_c] (nothing lost in aggregation)."""
    from entasis.publish.factors import Explainer

    m = md.model("rf", 7)
    row, hist = _row()
    p = m.predict_proba(row, history=hist).iloc[0].to_numpy()
    c = int(np.argmax(p))
    ex = Explainer(m, top_k=100)
    total = sum(_raw(ex, row, hist, c).values())
    base = float(np.asarray(ex._explainer("rf", m).expected_value)[c])
    assert total == pytest.approx(p[c] - base, abs=1e-9)
    facts = ex.factors(row, hist, c)
    assert sum(f["contribution"] for f in facts) == pytest.approx(p[c] - base, abs=1e-6)
    assert {f["feature"] for f in facts} <= {*md.FEATURES, "asset"}


@pytest.mark.parametrize("kind", ["lgbm", "xgb"])
def test_boosted_tree_shap_explains_the_iterations_predict_uses(kind):
    """softmax(E[margin] + sum of SHAP) reproduces the model's own probabilities (best iteration)."""
    from entasis.domain import target_column
    from entasis.models.factory import build_model
    from entasis.publish.factors import Explainer

    rows = md.training_rows(7)
    cut = int(len(rows) * 0.8)
    params = {"lgbm": dict(n_estimators=200, num_leaves=7, min_data_in_leaf=10, early_stopping_rounds=5),
              "xgb": dict(n_estimators=200, max_depth=3, early_stopping_rounds=5)}[kind]
    m = build_model(kind, features=md.FEATURES, n_jobs=1, device="cpu", **params)
    m.fit(rows.iloc[:cut], target_column(7), valid=rows.iloc[cut:])
    row, hist = _row()
    ex = Explainer(m)
    _, x = m.design_matrix(row, history=hist)
    e = ex._explainer(kind, m)
    phi = np.asarray(e.shap_values(x))[0]
    margin = np.asarray(e.expected_value) + phi.sum(axis=0)
    soft = np.exp(margin - margin.max())
    soft /= soft.sum()
    assert soft == pytest.approx(m.predict_matrix(x)[0], abs=1e-5)
    assert ex.factors(row, hist, int(np.argmax(soft)))


def test_ensemble_weights_member_contributions():
    from entasis.publish.factors import Explainer

    ens = md.model("ensemble", 14)
    row, hist = _row("SOL/USDT")
    c = 2
    both = _raw(Explainer(ens), row, hist, c)
    lg = _raw(Explainer(ens.models["lgbm"]), row, hist, c)
    rf = _raw(Explainer(ens.models["rf"]), row, hist, c)
    assert set(both) == set(lg) | set(rf)
    for f, v in both.items():
        assert v == pytest.approx(0.6 * lg.get(f, 0.0) + 0.4 * rf.get(f, 0.0), abs=1e-12)


def test_asset_one_hot_is_one_factor_valued_by_symbol():
    from entasis.publish.factors import ASSET_FACTOR, Explainer

    m = md.model("rf", 7)
    names = Explainer._base_names(m)
    assert len(names) == len(m.column_names())
    assert names.count(ASSET_FACTOR) == len(md.SYMBOLS) and set(names) == {*md.FEATURES, ASSET_FACTOR}
    row, hist = _row("ETH/USDT")
    ex = Explainer(m, top_k=100)
    facts = {f["feature"]: f for f in ex.factors(row, hist, 1)}
    if ASSET_FACTOR in facts:
        assert facts[ASSET_FACTOR]["value"] == "ETH/USDT"
    assert facts["rsi_14"]["value"] == pytest.approx(float(row["rsi_14"].iloc[0]))


def test_occlusion_fallback_for_models_without_trees():
    from entasis.models.factory import build_model
    from entasis.publish.factors import Explainer

    # a model without tree members (an LSTM, unfitted here: choosing the method needs no weights)
    assert Explainer(build_model("lstm", features=md.FEATURES)).method == "occlusion"
    assert Explainer(md.model("ensemble", 7)).method == "shap"
    with pytest.raises(ValueError, match="no tree member"):
        Explainer(build_model("lstm", features=md.FEATURES), method="shap")
    # occlusion itself, on a real model: p_c minus p_c with the feature unknown over row and history
    m = md.model("lgbm", 7)
    row, hist = _row()
    ex = Explainer(m, top_k=3, method="occlusion")
    p = m.predict_proba(row, history=hist).iloc[0].to_numpy()
    c = int(np.argmax(p))
    facts = ex.factors(row, hist, c)
    assert 0 < len(facts) <= 3 and {f["feature"] for f in facts} <= set(md.FEATURES)
    for f in facts:
        name = f["feature"]
        p_wo = m.predict_proba(row.assign(**{name: np.nan}), history=hist.assign(**{name: np.nan})).iloc[0, c]
        assert f["contribution"] == pytest.approx(p[c] - p_wo, abs=1e-8)
    # the largest occlusion effects come first
    full = _raw(ex, row, hist, c)
    assert [f["feature"] for f in facts] == sorted(full, key=lambda k: (-abs(full[k]), k))[:3]


def test_bad_input():
    from entasis.publish.factors import Explainer

    b = md.bars()
    ex = Explainer(md.model("lgbm", 7))
    with pytest.raises(ValueError, match="one row at a time"):
        ex.factors(b.iloc[200:202], b.iloc[:200], 1)
    with pytest.raises(ValueError, match="predicted_class"):
        ex.factors(b.iloc[[200]], b.iloc[:200], 3)
    with pytest.raises(ValueError, match="top_k"):
        Explainer(md.model("lgbm", 7), top_k=0)


def test_lagged_member_is_explained_on_its_own_context_matrix():
    """A member with lags / rolling windows is explained on the matrix its context path builds (every lag
    and rolling column summed back onto its base feature), and SHAP reproduces its probabilities there."""
    from entasis.domain import target_column
    from entasis.models.factory import build_model
    from entasis.publish.factors import Explainer

    rows = md.training_rows(7)
    m = build_model("lgbm", features=md.FEATURES, n_jobs=1, device="cpu", n_estimators=60, num_leaves=7,
                    min_data_in_leaf=10, lags=[1, 3], roll=[5])
    m.fit(rows, target_column(7))
    assert not m.reads_rows_only
    row, hist = _row()
    pos, x = m.design_matrix(row, history=hist)
    assert list(pos) == [0] and x.shape == (1, len(m.column_names())) == (1, 5 * len(md.FEATURES) + 3)
    ex = Explainer(m, top_k=100)
    e = ex._explainer("lgbm", m)
    phi = np.asarray(e.shap_values(x))[0]
    margin = np.asarray(e.expected_value) + phi.sum(axis=0)
    soft = np.exp(margin - margin.max())
    soft /= soft.sum()
    p = m.predict_proba(row, history=hist).iloc[0].to_numpy()
    assert soft == pytest.approx(p, abs=1e-5)
    c = int(np.argmax(p))
    raw = _raw(ex, row, hist, c)
    assert set(raw) <= {*md.FEATURES, "asset"} and len(raw) > len(md.FEATURES) // 2
    q = m.predict_matrix(x)[0]
    q = q / q.sum()
    dp = q[c] * (phi[:, c] - phi @ q)     # the softmax's first-order expansion, summed over all columns
    assert sum(raw.values()) == pytest.approx(float(dp.sum()), abs=1e-9)
    # without the history the row has no earlier bars: nothing to attribute
    assert _raw(ex, row, None, c) == {}
