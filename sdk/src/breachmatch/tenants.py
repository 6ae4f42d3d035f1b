"""Tenant (hospital) configuration shared by the matcher and the notifier.

A tenant is identified by its client certificate's hospital URI SAN
(``spiffe://breachmatch/hospital/<tenant id>``, `breachmatch.identity`); this file
says what each one may do and how it presents itself to patients. It is
operator configuration (a Kubernetes ConfigMap mounted as a file,
``BREACHMATCH_TENANTS_FILE``), so it is plain JSON and validated at start-up:
a typo must stop the service, not silently give a hospital the default budget.

Format::

    {
      "default_daily_budget": 500000,
      "default_outreach_daily_limit": 20000,
      "tenants": {
        "hospital-a": {
          "organisation": "Hospital A, Region Hovedstaden",
          "contact_point": "Patientkontoret, tlf. 38 38 38 38, hverdage 9-15",
          "daily_budget": 1000000,
          "outreach_daily_limit": 50000,
          "alert_email": "dpo@hospital-a.example",
          "language": "da"
        }
      }
    }

``daily_budget`` caps OPRF evaluations per UTC day (the matcher);
``outreach_daily_limit`` caps notices queued per UTC day (the notifier), so a
misused tenant certificate cannot send more than that many notices a day.

Unknown tenants (a valid certificate not listed) get the default budget and
no outreach identity; the notifier refuses outreach for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DAILY_BUDGET = 500_000
DEFAULT_OUTREACH_DAILY_LIMIT = 20_000
_TENANT_KEYS = {
    "organisation",
    "contact_point",
    "daily_budget",
    "outreach_daily_limit",
    "alert_email",
    "language",
}
_TOP_KEYS = {"default_daily_budget", "default_outreach_daily_limit", "tenants"}


class TenantConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    daily_budget: int
    outreach_daily_limit: int = DEFAULT_OUTREACH_DAILY_LIMIT
    organisation: str = ""
    contact_point: str = ""
    alert_email: str = ""
    language: str = "da"


@dataclass(frozen=True, slots=True)
class Tenants:
    default_daily_budget: int = DEFAULT_DAILY_BUDGET
    known: dict[str, Tenant] = field(default_factory=dict)
    default_outreach_daily_limit: int = DEFAULT_OUTREACH_DAILY_LIMIT

    def get(self, tenant_id: str) -> Tenant:
        return self.known.get(tenant_id) or Tenant(
            tenant_id, self.default_daily_budget, self.default_outreach_daily_limit
        )

    def is_known(self, tenant_id: str) -> bool:
        return tenant_id in self.known

    @classmethod
    def load(cls, path: Path | None) -> Tenants:
        """Load and validate; no file means defaults for everyone."""
        if path is None:
            return cls()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TenantConfigError(f"cannot read tenants file {path}: {exc}") from exc
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: object) -> Tenants:
        if not isinstance(doc, dict):
            raise TenantConfigError("tenants file must hold a JSON object")
        unknown = set(doc) - _TOP_KEYS
        if unknown:
            raise TenantConfigError(f"unknown top-level keys: {sorted(unknown)}")
        default = _count(doc, "default_daily_budget", DEFAULT_DAILY_BUDGET, "")
        default_outreach = _count(
            doc, "default_outreach_daily_limit", DEFAULT_OUTREACH_DAILY_LIMIT, ""
        )
        known: dict[str, Tenant] = {}
        for tenant_id, entry in (doc.get("tenants") or {}).items():
            if not isinstance(entry, dict):
                raise TenantConfigError(f"tenant {tenant_id!r} must be an object")
            bad = set(entry) - _TENANT_KEYS
            if bad:
                raise TenantConfigError(f"tenant {tenant_id!r}: unknown keys {sorted(bad)}")
            where = f"tenant {tenant_id!r}: "
            known[tenant_id] = Tenant(
                tenant_id=tenant_id,
                daily_budget=_count(entry, "daily_budget", default, where),
                outreach_daily_limit=_count(entry, "outreach_daily_limit", default_outreach, where),
                organisation=str(entry.get("organisation", "")),
                contact_point=str(entry.get("contact_point", "")),
                alert_email=str(entry.get("alert_email", "")),
                language=str(entry.get("language", "da")),
            )
        return cls(default, known, default_outreach)


def add_tenant(path: Path, tenant_id: str) -> bool:
    """Add `tenant_id` (with defaults) to the tenants file at `path`; False if already listed.

    The file is validated before and after (a broken file is reported, not
    overwritten) and replaced atomically. A missing file is created. The new
    entry has no organisation or contact point: the operator fills them in
    before the hospital may send outreach.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"tenants": {}}
    except (OSError, json.JSONDecodeError) as exc:
        raise TenantConfigError(f"cannot read tenants file {path}: {exc}") from exc
    Tenants.from_dict(doc)
    listed = doc.setdefault("tenants", {})
    if tenant_id in listed:
        return False
    listed[tenant_id] = {}
    Tenants.from_dict(doc)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    partial.replace(path)
    return True


def _count(doc: dict[str, object], key: str, default: int, where: str) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TenantConfigError(f"{where}{key} must be a non-negative integer")
    return value
