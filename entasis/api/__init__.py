"""Serving: the prediction REST API, analyst dashboard and Prometheus metrics (``entasis api serve``)."""
