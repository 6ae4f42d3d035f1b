"""Who may call which gRPC method: one table, default deny.

Authentication (`breachmatch.identity`) says *who* a caller is; this table
says what each kind of caller may do. Keeping every method of every service in
one place makes the policy reviewable at a glance, and the default is refusal:
a method that is not listed here is PERMISSION_DENIED for everyone, so a new
RPC stays closed until someone decides who needs it
(sdk/tests/test_authz.py checks that every method of every proto service is
listed, so that decision cannot be forgotten either).

Hospitals use the matcher (evaluate, breaches, keys) and the notifier; the
operator uses ingest and may read the matcher's public key info and breach
list (to check what hospitals see); services call no gRPC method of each
other today. Health and reflection answer every authenticated caller.
"""

from __future__ import annotations

from collections.abc import Mapping

from breachmatch.identity import Role

_HOSPITAL = frozenset({Role.HOSPITAL})
_OPERATOR = frozenset({Role.OPERATOR})
_HOSPITAL_OR_OPERATOR = frozenset({Role.HOSPITAL, Role.OPERATOR})
_ANYONE = frozenset(Role)

_MATCHER = "/breachmatch.v1.Matcher/"
_OUTREACH = "/breachmatch.v1.Outreach/"
_INGEST = "/breachmatch.v1.Ingest/"
_HEALTH = "/grpc.health.v1.Health/"
_REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/"

#: Full gRPC method name → the roles allowed to call it.
ALLOWED_ROLES: Mapping[str, frozenset[Role]] = {
    _MATCHER + "Evaluate": _HOSPITAL,
    _MATCHER + "GetKeyInfo": _HOSPITAL_OR_OPERATOR,
    _MATCHER + "ListBreaches": _HOSPITAL_OR_OPERATOR,
    _MATCHER + "GetBreach": _HOSPITAL,
    _MATCHER + "WatchBreaches": _HOSPITAL,
    _OUTREACH + "SubmitOutreach": _HOSPITAL,
    _OUTREACH + "GetStatus": _HOSPITAL,
    _OUTREACH + "WatchStatus": _HOSPITAL,
    _INGEST + "Upload": _OPERATOR,
    _INGEST + "GetJob": _OPERATOR,
    _INGEST + "RetractBreach": _OPERATOR,
    _HEALTH + "Check": _ANYONE,
    _HEALTH + "List": _ANYONE,
    _HEALTH + "Watch": _ANYONE,
    _REFLECTION + "ServerReflectionInfo": _ANYONE,
}


def allowed_roles(method: str) -> frozenset[Role]:
    """The roles that may call `method` (a full name such as ``/pkg.Service/Method``)."""
    return ALLOWED_ROLES.get(method, frozenset())


def is_allowed(method: str, role: Role) -> bool:
    return role in allowed_roles(method)
