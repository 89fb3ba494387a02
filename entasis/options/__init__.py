"""Option analytics: Black-76 pricing and Greeks, implied vols, Heston, SVI smiles, surface features.

Modules (import what you need; nothing heavy is imported here):

* ``black``    Black-76 / Black-Scholes prices and Greeks, vectorised.
* ``iv``       implied volatility, bracketed Householder on the normalised price; NaN + reason codes.
* ``deribit``  Deribit conventions: inverse (coin) premiums, 08:00 UTC expiries, display Greeks, CSVs.
* ``heston``   Heston characteristic function, COS pricing across strikes, snapshot calibration.
* ``svi``      raw SVI smiles fitted for many expiries at once.
* ``surface``  per-expiry smiles and ``snapshot_features`` (the features stage's entry point).
* ``store``    ``build_and_store_surface``: fit one snapshot and upsert features.vol_surface /
  features.option_features.
* ``plot``, ``cli``  the ``entasis options surface`` command and its PNG.
"""
