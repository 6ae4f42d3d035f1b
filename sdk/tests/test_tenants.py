"""Tenant configuration is validated strictly."""

from __future__ import annotations

import json

import pytest

from breachmatch.tenants import TenantConfigError, Tenants


def test_known_and_unknown_tenants(tmp_path):
    path = tmp_path / "tenants.json"
    path.write_text(
        json.dumps(
            {
                "default_daily_budget": 10,
                "default_outreach_daily_limit": 5,
                "tenants": {
                    "hospital-a": {
                        "daily_budget": 99,
                        "outreach_daily_limit": 7,
                        "organisation": "Hospital A",
                    },
                    "hospital-b": {},
                },
            }
        )
    )
    tenants = Tenants.load(path)
    assert tenants.get("hospital-a").daily_budget == 99
    assert tenants.get("hospital-a").organisation == "Hospital A"
    assert tenants.get("clinic-z").daily_budget == 10
    assert tenants.get("hospital-a").outreach_daily_limit == 7
    assert tenants.get("hospital-b").outreach_daily_limit == 5
    assert tenants.get("clinic-z").outreach_daily_limit == 5
    assert tenants.is_known("hospital-a")
    assert not tenants.is_known("clinic-z")
    assert Tenants.load(None).get("x").daily_budget > 0


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"tenant": {}}, "unknown top-level"),
        ({"tenants": {"a": {"budget": 1}}}, "unknown keys"),
        ({"tenants": {"a": {"daily_budget": "many"}}}, "daily_budget"),
        ({"default_daily_budget": -1}, "default_daily_budget"),
        ({"default_outreach_daily_limit": True}, "default_outreach_daily_limit"),
        ({"tenants": {"a": {"outreach_daily_limit": -5}}}, "outreach_daily_limit"),
        ([], "JSON object"),
    ],
)
def test_bad_config_is_refused(doc, message):
    with pytest.raises(TenantConfigError, match=message):
        Tenants.from_dict(doc)
