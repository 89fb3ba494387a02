"""publish stage: predictions to ml.predictions, outcome reconciliation, the champion of record.

Library entries (the DAGs call these; each takes the time explicitly, never the wall clock):

* :func:`entasis.publish.predictions.publish_predictions` ``(conn, *, as_of, assets=None, horizons=None,
  published_at=None) -> PublishSummary``
* :func:`entasis.publish.reconcile.reconcile_outcomes` ``(conn, *, now) -> int``
* :func:`entasis.publish.champions.record_champion` ``(conn, *, asset, horizon, model_name, version,
  promoted_at, ...)`` for promotion to keep ml.champions (and so ml.model_status) current.
"""
