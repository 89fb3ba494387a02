"""backtest stage: walk-forward evaluation beside naive baselines, trading simulation, reports,
champion/challenger promotion and rollback.

Library entries for the DAGs (imported lazily so ``import entasis.backtest`` stays light):

* :func:`run_walk_forward` (``entasis.backtest.runner``) — load, walk forward, record, report;
* :func:`evaluate_and_promote` (``entasis.backtest.promotion``) — score @challenger vs @champion on the
  most recent window and move @champion when the rule says so;
* :func:`check_live_accuracy_and_rollback` (``entasis.monitor.rollback``, re-exported here) — roll
  @champion back when its reconciled live accuracy stays low.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "run_walk_forward": "entasis.backtest.runner",
    "walk_forward": "entasis.backtest.walkforward",
    "evaluate_and_promote": "entasis.backtest.promotion",
    "check_live_accuracy_and_rollback": "entasis.monitor.rollback",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'entasis.backtest' has no attribute {name!r}")
