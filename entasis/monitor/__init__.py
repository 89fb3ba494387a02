"""Daily health checks of the live system: accuracy, drift, stale data."""
