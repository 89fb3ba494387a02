"""registry stage: MLflow tracking store, the pyfunc wrapping the ensemble, aliases and retention.

``tracking`` (where MLflow points: SQLite under ENTASIS_HOME by default, a server or S3 when
configured), ``pyfunc`` (the registered artifact, logged as models-from-code: nothing pickled),
``models`` (model names, ``set_alias`` / ``get_version_by_alias`` / version tags, champion history,
``rollback``, ``apply_retention``, ``load_champion``).
"""
