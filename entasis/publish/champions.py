"""Which model serves each (asset, horizon), and the record of it in ml.champions.

The publisher asks a :data:`ChampionLoader` for the @champion of an (asset, horizon): the MLflow
registry in production (:func:`registry_loader`), any callable in tests or ad-hoc runs. Whatever it
returns is also copied into ``ml.champions`` (:func:`record_champion`) so analysts see what is serving,
whether it is unproven and how it compared with the naive baselines, without access to MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from entasis.domain import POOLED
from entasis.registry import models as reg

if TYPE_CHECKING:
    import psycopg

    from entasis.config import Settings
    from entasis.models.base import Model



class ChampionError(LookupError):
    """No usable champion (registry unavailable, nothing promoted, bad registry metadata)."""


@dataclass(frozen=True)
class Champion:
    """A loaded @champion plus the registry facts the publisher stores next to its predictions."""

    model: Model
    model_name: str
    version: str
    horizon: int
    asset: str = POOLED
    run_id: str | None = None
    trained_at: datetime | None = None
    promoted_at: datetime | None = None
    unproven: bool = False
    test_accuracy: float | None = None
    best_baseline: str | None = None
    best_baseline_accuracy: float | None = None
    beats_baseline: bool | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def model_version(self) -> str:
        """What ml.predictions.model_version holds: the registered name and version, unambiguous."""
        return f"{self.model_name}/{self.version}"


# (asset, horizon) -> the champion serving it (asset-specific, else pooled), or None when none exists.
ChampionLoader = Callable[[str, int], "Champion | None"]


def _check_scope(asset: str | None, horizon: int) -> str:
    scope = POOLED if asset in (None, "", POOLED) else str(asset)
    if scope != POOLED and "/" not in scope:
        raise ValueError(f"asset must be a symbol such as 'BTC/USDT' or {POOLED!r}; got {asset!r}")
    if int(horizon) != horizon or horizon <= 0:
        raise ValueError(f"horizon must be a positive whole number of days; got {horizon!r}")
    return scope


def record_champion(
    conn: psycopg.Connection,
    *,
    asset: str | None,
    horizon: int,
    model_name: str,
    version: str | int,
    promoted_at: datetime,
    run_id: str | None = None,
    trained_at: datetime | None = None,
    unproven: bool = False,
    test_accuracy: float | None = None,
    best_baseline: str | None = None,
    best_baseline_accuracy: float | None = None,
    beats_baseline: bool | None = None,
    tags: Mapping[str, Any] | None = None,
) -> bool:
    """Make (model_name, version) the champion of record for (asset or pooled, horizon); idempotent.

    ``asset=None`` (or ``'pooled'``) records a pooled model. ``beats_baseline`` defaults to
    ``test_accuracy > best_baseline_accuracy`` when both are known. ``promoted_at`` only takes effect
    when the version changes, so re-recording the same champion (as every publish run does) leaves the
    row untouched. ``trained_at`` is the version's own training time
    (:func:`entasis.registry.models.trained_at_of`); re-recording the same version without one keeps
    the stored time. Returns True when the row was inserted or changed.
    """
    scope = _check_scope(asset, horizon)
    if not model_name or not str(version):
        raise ValueError("record_champion needs a model_name and a version")
    if promoted_at.tzinfo is None:
        raise ValueError("promoted_at must be timezone-aware (UTC)")
    if trained_at is not None and trained_at.tzinfo is None:
        raise ValueError("trained_at must be timezone-aware (UTC)")
    for name, acc in (("test_accuracy", test_accuracy), ("best_baseline_accuracy", best_baseline_accuracy)):
        if acc is not None and not 0.0 <= float(acc) <= 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1]; got {acc!r}")
    if beats_baseline is None and test_accuracy is not None and best_baseline_accuracy is not None:
        beats_baseline = float(test_accuracy) > float(best_baseline_accuracy)
    tag_json = json.dumps({str(k): str(v) for k, v in (tags or {}).items()}, sort_keys=True)
    params = {
        "asset": scope, "horizon": int(horizon), "model_name": model_name, "version": str(version),
        "run_id": run_id, "trained_at": trained_at, "unproven": bool(unproven),
        "test_accuracy": None if test_accuracy is None else float(test_accuracy),
        "best_baseline": best_baseline,
        "best_baseline_accuracy": None if best_baseline_accuracy is None else float(best_baseline_accuracy),
        "beats_baseline": beats_baseline, "tags": tag_json, "promoted_at": promoted_at,
    }
    with conn.transaction():
        row = conn.execute(
            """
            INSERT INTO ml.champions AS c (asset, horizon, model_name, version, run_id, trained_at, unproven,
                test_accuracy, best_baseline, best_baseline_accuracy, beats_baseline, tags, promoted_at)
            VALUES (%(asset)s, %(horizon)s, %(model_name)s, %(version)s, %(run_id)s, %(trained_at)s,
                %(unproven)s, %(test_accuracy)s, %(best_baseline)s, %(best_baseline_accuracy)s,
                %(beats_baseline)s, %(tags)s::jsonb, %(promoted_at)s)
            ON CONFLICT (asset, horizon) DO UPDATE SET
                model_name = EXCLUDED.model_name, version = EXCLUDED.version, run_id = EXCLUDED.run_id,
                trained_at = CASE WHEN (c.model_name, c.version) IS NOT DISTINCT FROM
                                       (EXCLUDED.model_name, EXCLUDED.version)
                                  THEN coalesce(EXCLUDED.trained_at, c.trained_at) ELSE EXCLUDED.trained_at END,
                unproven = EXCLUDED.unproven,
                test_accuracy = EXCLUDED.test_accuracy, best_baseline = EXCLUDED.best_baseline,
                best_baseline_accuracy = EXCLUDED.best_baseline_accuracy,
                beats_baseline = EXCLUDED.beats_baseline, tags = EXCLUDED.tags,
                promoted_at = CASE WHEN (c.model_name, c.version) IS DISTINCT FROM
                                        (EXCLUDED.model_name, EXCLUDED.version)
                                   THEN EXCLUDED.promoted_at ELSE c.promoted_at END
            WHERE (c.model_name, c.version, c.run_id, c.trained_at, c.unproven, c.test_accuracy,
                   c.best_baseline, c.best_baseline_accuracy, c.beats_baseline, c.tags)
                  IS DISTINCT FROM
                  (EXCLUDED.model_name, EXCLUDED.version, EXCLUDED.run_id,
                   CASE WHEN (c.model_name, c.version) IS NOT DISTINCT FROM (EXCLUDED.model_name, EXCLUDED.version)
                        THEN coalesce(EXCLUDED.trained_at, c.trained_at) ELSE EXCLUDED.trained_at END,
                   EXCLUDED.unproven, EXCLUDED.test_accuracy, EXCLUDED.best_baseline,
                   EXCLUDED.best_baseline_accuracy, EXCLUDED.beats_baseline, EXCLUDED.tags)
            RETURNING c.promoted_at
            """,
            params,
        ).fetchone()
        if row is None:
            return False
        conn.execute(
            """
            INSERT INTO ml.champion_history (asset, horizon, model_name, version, run_id, unproven, promoted_at)
            VALUES (%(asset)s, %(horizon)s, %(model_name)s, %(version)s, %(run_id)s, %(unproven)s, %(p)s)
            ON CONFLICT DO NOTHING
            """,
            {**params, "p": row[0]},
        )
    return True


def record_from(conn: psycopg.Connection, champ: Champion, *, promoted_at: datetime) -> bool:
    """Record a loaded champion; ``promoted_at`` is used when the champion carries none."""
    acc, base_acc = champ.test_accuracy, champ.best_baseline_accuracy
    return record_champion(
        conn, asset=champ.asset, horizon=champ.horizon, model_name=champ.model_name, version=champ.version,
        promoted_at=champ.promoted_at or promoted_at, run_id=champ.run_id, trained_at=champ.trained_at,
        unproven=champ.unproven, test_accuracy=acc, best_baseline=champ.best_baseline,
        best_baseline_accuracy=base_acc, beats_baseline=champ.beats_baseline, tags=champ.tags,
    )


# -- the MLflow registry ---------------------------------------------------------------------------
def _float_tag(tags: Mapping[str, str], *names: str) -> float | None:
    for n in names:
        v = tags.get(n)
        if v not in (None, ""):
            try:
                return float(str(v))
            except ValueError:
                raise ChampionError(f"registry tag {n}={v!r} is not a number") from None
    return None


def _bool_tag(tags: Mapping[str, str], name: str) -> bool | None:
    v = str(tags.get(name, "")).strip().lower()
    if not v:
        return None
    if v in ("1", "true", "yes", "y", "t"):
        return True
    if v in ("0", "false", "no", "n", "f"):
        return False
    raise ChampionError(f"registry tag {name}={tags.get(name)!r} is not a boolean")


def champion_from_tags(model: Model, *, model_name: str, version: str, horizon: int, asset: str,
                       run_id: str | None, tags: Mapping[str, str], trained_at: datetime | None = None,
                       promoted_at: datetime | None = None) -> Champion:
    """Build a :class:`Champion` from registry version tags (the names promotion writes)."""
    base = tags.get("best_baseline") or tags.get("baseline")
    beats = _bool_tag(tags, "beats_baseline")
    unproven = _bool_tag(tags, "unproven")
    if unproven is None:  # no explicit mark: a champion that did not beat the baselines is unproven
        unproven = beats is False
    return Champion(
        model=model, model_name=model_name, version=str(version), horizon=int(horizon), asset=asset,
        run_id=run_id, trained_at=trained_at, promoted_at=promoted_at,
        unproven=unproven,
        test_accuracy=_float_tag(tags, "test_accuracy", "accuracy"),
        best_baseline=str(base) if base else None,
        best_baseline_accuracy=_float_tag(tags, "best_baseline_accuracy", "baseline_accuracy"),
        beats_baseline=beats,
        tags=dict(tags),
    )


def registry_loader(settings: Settings | None = None) -> ChampionLoader:
    """The production loader: the MLflow registry's @champion, asset-specific first, else pooled.

    The ensemble inside the registered pyfunc is unwrapped (the publisher needs ``predict_proba`` with
    history and the tree members for SHAP); a version is loaded once per loader and reused across
    assets. ``trained_at`` is the version's own (:func:`entasis.registry.models.trained_at_of`).
    """
    cache: dict[tuple[str, str], Model] = {}

    def load(asset: str, horizon: int) -> Champion | None:
        for scope in (asset, None):
            name = reg.model_name(scope, horizon)
            mv = reg.get_version_by_alias(name, reg.CHAMPION, settings)
            if mv is None:
                continue
            key = (name, str(mv.version))
            if key not in cache:
                try:
                    py = reg.load(name, version=mv.version, settings=settings)
                    inner = py.unwrap_python_model()
                except Exception as e:  # MLflow raises many types; name the model in one clear error
                    raise ChampionError(f"cannot load {name} v{mv.version}: {e}") from e
                model = getattr(inner, "ensemble", None)
                if model is None:
                    raise ChampionError(f"{name} v{mv.version} is not an Entasis pyfunc (no ensemble inside)")
                cache[key] = model
            tags = {str(k): str(v) for k, v in (mv.tags or {}).items()}
            try:
                trained_at = reg.trained_at_of(mv)
            except reg.RegistryError as e:
                raise ChampionError(str(e)) from None
            return champion_from_tags(
                cache[key], model_name=name, version=str(mv.version), horizon=horizon,
                asset=POOLED if scope is None else asset, run_id=mv.run_id or tags.get("run_id"), tags=tags,
                trained_at=trained_at,
            )
        return None

    return load
