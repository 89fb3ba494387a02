"""Registered models: names, aliases, version tags, retention, champion history and rollback.

One registered model per (asset or pooled, horizon), named by :func:`model_name`. Training registers
each new version with the alias ``@challenger``; promotion to ``@champion`` is the backtest stage's
decision, made through :func:`set_alias` (which records every champion in the registered-model tag
``champion_history``, newest last) so that :func:`rollback` can point ``@champion`` back.

Retention keeps the newest ``keep`` versions (``mlflow.keep_versions``, default 5) and deletes older
ones, except versions that hold an alias (``@champion`` above all) and the previous champion (the
rollback target).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from entasis.config import Settings, get_settings
from entasis.domain import POOLED, from_ms, utc_datetime
from entasis.registry.tracking import client

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

PREFIX = "entasis"
CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
HISTORY_MAX = 50
_NAME_RE = re.compile(rf"^{PREFIX}-(?P<asset>.+)-(?P<h>\d+)d$")


class RegistryError(ValueError):
    """A registry operation that cannot be done (unknown model, no champion, nothing to roll back to)."""


def asset_slug(asset: str) -> str:
    """'BTC/USDT' -> 'BTC-USDT', 'BTC/USDT:USDT' -> 'BTC-USDT-USDT' (registry names allow no '/')."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", asset).strip("-")
    if not slug:
        raise RegistryError(f"asset {asset!r} has no usable characters for a model name")
    return slug


def model_name(asset: str | None, horizon: int) -> str:
    """``entasis-pooled-7d`` for the pooled model, ``entasis-BTC-USDT-7d`` for a per-asset one."""
    if int(horizon) <= 0:
        raise RegistryError(f"horizon must be a positive number of days; got {horizon}")
    return f"{PREFIX}-{POOLED if asset is None else asset_slug(asset)}-{int(horizon)}d"


def parse_model_name(name: str) -> tuple[str | None, int]:
    """Inverse of :func:`model_name` up to the slug: (asset slug or None for pooled, horizon)."""
    m = _NAME_RE.match(name)
    if not m:
        raise RegistryError(f"{name!r} is not an Entasis model name (expected entasis-<asset|pooled>-<h>d)")
    asset = m.group("asset")
    return (None if asset == POOLED else asset), int(m.group("h"))


# -- aliases and tags ------------------------------------------------------------------------------
def get_version_by_alias(name: str, alias: str, settings: Settings | None = None) -> ModelVersion | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def alias_version(name: str, alias: str, settings: Settings | None = None) -> str | None:
    """The version number (as a string) an alias points at, or None."""
    mv = get_version_by_alias(name, alias, settings)
    return None if mv is None else str(mv.version)


def champion_history(name: str, settings: Settings | None = None) -> list[str]:
    rm = _registered(name, settings)
    raw = rm.tags.get(HISTORY_TAG)
    return [str(v) for v in json.loads(raw)] if raw else []


def _write_history(name: str, hist: list[str], settings: Settings | None) -> None:
    client(settings).set_registered_model_tag(name, HISTORY_TAG, json.dumps(hist[-HISTORY_MAX:]))


def set_alias(name: str, alias: str, version: str | int, settings: Settings | None = None) -> None:
    """Point ``alias`` at ``version``; moving ``@champion`` is recorded in the champion history."""
    c = client(settings)
    v = str(version)
    c.get_model_version(name, v)  # fails clearly on an unknown version
    if alias == CHAMPION:
        cur = get_version_by_alias(name, CHAMPION, settings)
        hist = champion_history(name, settings)
        if cur is None or str(cur.version) != v:
            if cur is not None and (not hist or hist[-1] != str(cur.version)):
                hist.append(str(cur.version))
            hist.append(v)
            _write_history(name, hist, settings)
    c.set_registered_model_alias(name, alias, v)


def delete_alias(name: str, alias: str, settings: Settings | None = None) -> None:
    client(settings).delete_registered_model_alias(name, alias)


def get_version_tags(name: str, version: str | int, settings: Settings | None = None) -> dict[str, str]:
    return dict(client(settings).get_model_version(name, str(version)).tags)


def trained_at_of(mv: ModelVersion) -> datetime | None:
    """A version's own training time: its ``trained_at`` tag (written once, when training registered
    it), else the version's creation time in the registry. Never the time of a later promotion or
    rollback, so re-recording a champion does not rewrite when it was trained."""
    raw = (mv.tags or {}).get("trained_at")
    if raw:
        try:
            return utc_datetime(raw, "registry tag trained_at")
        except ValueError as e:
            raise RegistryError(f"{mv.name} v{mv.version}: {e}") from None
    try:
        return from_ms(int(mv.creation_timestamp)) if mv.creation_timestamp else None
    except (TypeError, ValueError, OverflowError):
        return None


def version_trained_at(name: str, version: str | int, settings: Settings | None = None) -> datetime | None:
    """:func:`trained_at_of` the registered ``version`` of ``name``."""
    return trained_at_of(client(settings).get_model_version(name, str(version)))


def set_version_tags(name: str, version: str | int, tags: dict[str, Any],
                     settings: Settings | None = None) -> None:
    """Write tags (values stringified; booleans as 'true' / 'false')."""
    c = client(settings)
    for k, val in tags.items():
        c.set_model_version_tag(name, str(version), k, _tag_value(val))


def _tag_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return str(v)


# -- listing, retention, rollback --------------------------------------------------------------------
def _registered(name: str, settings: Settings | None) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model named {name!r}") from None


def versions(name: str, settings: Settings | None = None) -> list[ModelVersion]:
    """All versions of ``name``, newest first, with aliases filled in."""
    c = client(settings)
    found = list(c.search_model_versions(f"name = '{name}'", max_results=1000))
    aliases: dict[str, list[str]] = {}
    for alias, ver in (_registered(name, settings).aliases or {}).items():
        aliases.setdefault(str(ver), []).append(alias)
    for mv in found:
        mv._aliases = sorted(aliases.get(str(mv.version), []))
    return sorted(found, key=lambda mv: int(mv.version), reverse=True)


def apply_retention(name: str, keep: int | None = None, settings: Settings | None = None) -> list[str]:
    """Delete versions beyond the newest ``keep``; never an aliased one or the rollback target."""
    s = settings or get_settings()
    keep = s.mlflow.keep_versions if keep is None else keep
    if keep < 1:
        raise RegistryError(f"keep_versions must be >= 1; got {keep}")
    vs = versions(name, s)
    hist = champion_history(name, s)
    protected = {str(mv.version) for mv in vs if mv.aliases}
    cur = get_version_by_alias(name, CHAMPION, s)
    if cur is not None:
        prev = _previous_champion(hist, str(cur.version), {str(mv.version) for mv in vs})
        if prev is not None:
            protected.add(prev)
    deleted = []
    c = client(s)
    for mv in vs[keep:]:
        v = str(mv.version)
        if v in protected:
            continue
        c.delete_model_version(name, v)
        deleted.append(v)
    if deleted:
        log.info("%s: deleted old version(s) %s", name, ", ".join(deleted))
    return deleted


def _previous_champion(hist: list[str], current: str, existing: set[str]) -> str | None:
    """The newest champion before ``current`` that still exists."""
    seq = list(hist)
    while seq and seq[-1] == current:
        seq.pop()
    for v in reversed(seq):
        if v != current and v in existing:
            return v
    return None


def rollback(name: str, settings: Settings | None = None) -> tuple[str, str]:
    """Point ``@champion`` back at the previous champion; returns (from_version, to_version)."""
    s = settings or get_settings()
    cur = get_version_by_alias(name, CHAMPION, s)
    if cur is None:
        raise RegistryError(f"{name} has no @champion to roll back")
    hist = champion_history(name, s)
    existing = {str(mv.version) for mv in versions(name, s)}
    prev = _previous_champion(hist, str(cur.version), existing)
    if prev is None:
        raise RegistryError(f"{name}: no earlier champion version still registered (history {hist})")
    # Drop the rolled-back entries so a second rollback goes one step further back.
    while hist and hist[-1] != prev:
        hist.pop()
    _write_history(name, hist, s)
    client(s).set_registered_model_alias(name, CHAMPION, prev)
    log.info("%s: @champion rolled back from v%s to v%s", name, cur.version, prev)
    return str(cur.version), prev


@dataclass
class ModelSummary:
    name: str
    versions: list[str]
    aliases: dict[str, str]
    champion_tags: dict[str, str]


def list_models(settings: Settings | None = None, prefix: str = PREFIX) -> list[ModelSummary]:
    """Every Entasis registered model with its versions, aliases and the champion's honesty tags."""
    c = client(settings)
    out = []
    for rm in c.search_registered_models(f"name LIKE '{prefix}-%'", max_results=1000):
        vs = versions(rm.name, settings)
        aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}
        champ = aliases.get(CHAMPION) or aliases.get(CHALLENGER)
        tags = get_version_tags(rm.name, champ, settings) if champ else {}
        out.append(ModelSummary(rm.name, [str(mv.version) for mv in vs], aliases, tags))
    return sorted(out, key=lambda m: m.name)


# -- loading -----------------------------------------------------------------------------------------
def model_uri(name: str, alias: str | None = CHAMPION, version: str | int | None = None) -> str:
    return f"models:/{name}/{version}" if version is not None else f"models:/{name}@{alias}"


def load(name: str, *, alias: str | None = CHAMPION, version: str | int | None = None,
         settings: Settings | None = None) -> Any:
    """The pyfunc of a registered version (by alias, default ``@champion``, or by number)."""
    import mlflow.pyfunc

    client(settings)
    if version is None and alias is not None and get_version_by_alias(name, alias, settings) is None:
        raise RegistryError(f"{name} has no @{alias} version")
    return mlflow.pyfunc.load_model(model_uri(name, alias, version))


def load_champion(asset: str | None, horizon: int, settings: Settings | None = None) -> Any:
    """The ``@champion`` pyfunc for (asset or pooled, horizon): ``.predict(features.bars rows)``."""
    return load(model_name(asset, horizon), alias=CHAMPION, settings=settings)


def load_bundle(name: str, *, alias: str | None = CHAMPION, version: str | int | None = None,
                settings: Settings | None = None) -> Any:
    """The unwrapped :class:`~entasis.registry.pyfunc.EntasisPyfunc`: ``.ensemble`` (members, weights,
    temperatures), ``.vol`` (or None) and ``.spec`` (features, horizon, run_id, ...), for callers that
    need more than predictions (per-member probabilities, explanations)."""
    return load(name, alias=alias, version=version, settings=settings).unwrap_python_model()
