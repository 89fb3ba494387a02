"""One DAG run in its own process, so the soak can SIGKILL it mid-task:
``python -m entasis.soak.child DAG_ID LOGICAL_DATE`` (environment inherited from the soak)."""

from __future__ import annotations

import sys
from datetime import datetime

from entasis.demo import load_dags


def main(argv: list[str]) -> int:
    dag_id, at = argv[0], datetime.fromisoformat(argv[1])
    dr = load_dags()[dag_id].test(logical_date=at)
    return 0 if "success" in str(getattr(dr, "state", "")) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
