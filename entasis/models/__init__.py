"""models stage: direction ensemble (LSTM + RandomForest + XGBoost + LightGBM) and volatility forecasts.

``base`` (the shared Model interface and factory: read its docstring first), ``datasets`` (purged
splits, context, scaling, views), ``lstm``, ``trees``, ``ensemble``, ``calibration``, ``metrics``
(baselines), ``volatility``, ``train`` (``train_and_register``, the entry the DAG calls), ``cli``.
Heavy libraries are imported inside functions so importing this package stays cheap.
"""
