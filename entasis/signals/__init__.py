"""Market signals: support/resistance levels and flash-crash detection (issue 16)."""
