"""The allow-list table covers every RPC, and says what the threat model says."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from breachmatch.authz import ALLOWED_ROLES, allowed_roles, is_allowed
from breachmatch.identity import Role
from breachmatch.v1 import ingest_pb2, matcher_pb2, outreach_pb2
from breachmatch_dev.rpc_probe import full_name, methods_of

SERVED = methods_of(
    matcher_pb2.DESCRIPTOR,
    outreach_pb2.DESCRIPTOR,
    ingest_pb2.DESCRIPTOR,
    health_pb2.DESCRIPTOR,
    reflection_pb2.DESCRIPTOR,
)


def test_every_served_method_is_in_the_table_and_nothing_else() -> None:
    assert {full_name(m) for m in SERVED} == set(ALLOWED_ROLES)


def test_a_method_missing_from_the_table_is_denied_to_every_role() -> None:
    assert allowed_roles("/breachmatch.v1.Matcher/NewMethod") == frozenset()
    assert not any(is_allowed("/breachmatch.v1.Matcher/NewMethod", role) for role in Role)


@pytest.mark.parametrize("method", [full_name(m) for m in methods_of(ingest_pb2.DESCRIPTOR)])
def test_ingest_is_the_operators_only(method: str) -> None:
    assert allowed_roles(method) == {Role.OPERATOR}


@pytest.mark.parametrize("method", [full_name(m) for m in methods_of(outreach_pb2.DESCRIPTOR)])
def test_outreach_is_the_hospitals_only(method: str) -> None:
    assert allowed_roles(method) == {Role.HOSPITAL}


def test_matcher_is_the_hospitals_and_the_operator_may_read_public_key_info_and_breaches() -> None:
    expected = {
        "Evaluate": {Role.HOSPITAL},
        "GetBreach": {Role.HOSPITAL},
        "WatchBreaches": {Role.HOSPITAL},
        "GetKeyInfo": {Role.HOSPITAL, Role.OPERATOR},
        "ListBreaches": {Role.HOSPITAL, Role.OPERATOR},
    }
    assert {m.name: allowed_roles(full_name(m)) for m in methods_of(matcher_pb2.DESCRIPTOR)} == (
        expected
    )
