"""The Assets that link Entasis DAGs: ingest -> features -> train -> publish.

Plain definitions with no I/O, safe to import at DAG parse time.
"""

from __future__ import annotations

from airflow.sdk import Asset

CANDLES = Asset("entasis://market/candles", group="market")
FUNDING = Asset("entasis://market/funding_rates", group="market")
OPEN_INTEREST = Asset("entasis://market/open_interest", group="market")
OPTIONS = Asset("entasis://market/option_quotes", group="market")
FEATURES = Asset("entasis://features/bars", group="features")
CHAMPION = Asset("entasis://ml/champion", group="ml")
PREDICTIONS = Asset("entasis://ml/predictions", group="ml")
FLASH_CRASHES = Asset("entasis://signals/flash_crashes", group="signals")
