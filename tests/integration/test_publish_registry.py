"""End to end through the real MLflow registry: register @champion pyfuncs, publish with the default
loader, reconcile, read ml.model_status, and drive it all from the ``entasis publish`` CLI."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.unit.publish import market_data as md

AS_OF = datetime(2023, 6, 1, 6, 0, tzinfo=UTC)
BAR_CLOSE = datetime(2023, 6, 1, tzinfo=UTC)


def _register(asset: str | None, horizon: int, tags: dict, *, model_uri: str | None = None
              ) -> tuple[str, str, str, str]:
    """Register the test ensemble as an Entasis pyfunc @champion with these version tags.

    Logs the pyfunc once (slow: MLflow validates models-from-code); with ``model_uri`` an already
    logged model becomes a version of another registered model. Returns (name, version, run_id, uri).
    """
    import mlflow

    from entasis.models.ensemble import EnsembleModel
    from entasis.registry import models as reg
    from entasis.registry.pyfunc import log_pyfunc
    from entasis.registry.tracking import client, configure, ensure_experiment

    configure()
    name = reg.model_name(asset, horizon)
    if model_uri is None:
        ens = md.model("boosted", horizon)
        assert isinstance(ens, EnsembleModel)
        with mlflow.start_run(experiment_id=ensure_experiment()) as run:
            info = log_pyfunc(ens, spec={"horizon": horizon, "timeframe": "1d"},
                              registered_model_name=name)
        version, run_id, uri = str(info.registered_model_version), run.info.run_id, info.model_uri
    else:
        mv = mlflow.register_model(model_uri, name)
        version, uri = str(mv.version), model_uri
        run_id = str(mv.run_id or client().get_model_version(name, version).run_id)
    reg.set_version_tags(name, version, {**tags, "run_id": run_id})
    reg.set_alias(name, reg.CHAMPION, version)
    return name, version, run_id, uri


def test_publish_from_the_registry_then_reconcile_and_status(db_url):
    from typer.testing import CliRunner

    from entasis.cli import app
    from entasis.publish.predictions import publish_predictions
    from entasis.publish.status import model_status
    from entasis.store.db import connect

    pooled = _register(None, 7, {"test_accuracy": 0.41, "best_baseline": "majority",
                                 "best_baseline_accuracy": 0.44, "beats_baseline": False,
                                 "trained_at": "2023-04-01T00:00:00+00:00"})
    btc = _register("BTC/USDT", 7, {"test_accuracy": 0.47, "best_baseline": "persistence",
                                    "best_baseline_accuracy": 0.40, "beats_baseline": True,
                                    "unproven": False}, model_uri=pooled[3])
    with connect() as conn:
        md.load_market(conn)
        s = publish_predictions(conn, as_of=AS_OF, horizons=[7])  # default loader: the MLflow registry
        assert s.skipped == [] and s.published == 3
        rows = conn.execute("SELECT asset, model_version, run_id, jsonb_array_length(factors), as_of "
                            "FROM ml.predictions ORDER BY asset").fetchall()
        champs = conn.execute("SELECT asset, model_name, version, run_id, unproven, beats_baseline, test_accuracy, "
                              "best_baseline_accuracy, trained_at FROM ml.champions ORDER BY asset").fetchall()
    # BTC has its own champion; the others fall back to the pooled one
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("BTC/USDT", f"{btc[0]}/{btc[1]}", btc[2]),
        ("ETH/USDT", f"{pooled[0]}/{pooled[1]}", pooled[2]),
        ("SOL/USDT", f"{pooled[0]}/{pooled[1]}", pooled[2]),
    ]
    assert all(r[3] > 0 and r[4] == BAR_CLOSE for r in rows)
    assert champs[0][:6] == ("BTC/USDT", btc[0], btc[1], btc[2], False, True)
    assert champs[1][:6] == ("pooled", pooled[0], pooled[1], pooled[2], True, False)  # no edge: unproven
    assert champs[1][6:] == (0.41, 0.44, datetime(2023, 4, 1, tzinfo=UTC))

    # the same through the CLI, a few days later, then reconcile and show
    runner = CliRunner()
    for day in (2, 3):
        res = runner.invoke(app, ["publish", "run", "--as-of", f"2023-06-0{day}T06:00:00+00:00",
                                  "--horizons", "7"])
        assert res.exit_code == 0, res.output
        assert "published 3 prediction(s)" in res.output
    res = runner.invoke(app, ["publish", "reconcile", "--now", "2023-06-20T00:00:00+00:00"])
    assert res.exit_code == 0 and "reconciled 9 prediction(s)" in res.output, res.output
    with connect() as conn:
        st = model_status(conn)
        acc = conn.execute("SELECT asset, avg(correct::int) FROM ml.predictions GROUP BY asset").fetchall()
    by = {r.asset: r for r in st.itertuples(index=False)}
    for asset, a in acc:
        assert by[asset].live_accuracy_30d == pytest.approx(float(a))
        assert by[asset].n_predictions == 3 and by[asset].live_reconciled_30d == 3
    assert by["BTC/USDT"].champion_scope == "BTC/USDT" and by["ETH/USDT"].champion_scope == "pooled"
    res = runner.invoke(app, ["publish", "show", "--limit", "5"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "Recent predictions" in res.output and "Model status" in res.output
    assert "entasis-BTC-USDT-7d" in res.output and res.output.count("2023-06-03 00:00") >= 3


def test_cli_reports_bad_input_and_missing_champions(db_url):
    from typer.testing import CliRunner

    from entasis.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["publish", "run", "--as-of", "June 1st"])
    assert res.exit_code == 1 and "is not a timestamp" in res.output
    res = runner.invoke(app, ["publish", "run", "--as-of", "2023-06-01T06:00:00"])  # naive: refused
    assert res.exit_code == 1 and "has no time zone" in res.output
    res = runner.invoke(app, ["publish", "run", "--as-of", "2023-06-01T06:00:00Z", "--horizons", "x"])
    assert res.exit_code == 1 and "--horizons" in res.output
    # an empty registry and no features: nothing is published, and the CLI says why
    res = runner.invoke(app, ["publish", "run", "--as-of", "2023-06-01T06:00:00+00:00", "--assets", "BTC/USDT"])
    assert res.exit_code == 1 and "skipped" in res.output and "no complete 1d bar" in res.output
    res = runner.invoke(app, ["publish", "show"])
    assert res.exit_code == 0 and "no predictions published yet" in res.output
