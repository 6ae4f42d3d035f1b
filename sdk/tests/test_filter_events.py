"""One reading of BREACHES stream events for every consumer; signed retractions; versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import nacl.signing
import pytest

from breachmatch.filter import (
    Admission,
    BreachEventError,
    BreachIdError,
    BreachVersions,
    Retraction,
    RetractionFormatError,
    RetractionSignatureError,
    check_breach_id,
    path_in,
    read_breach_event,
    sign_manifest,
    verify_retraction,
)
from breachmatch.filter.retraction import RETRACTION_CONTEXT
from breachmatch.v1 import breach_pb2
from breachmatch_dev.breach_events import (
    make_manifest,
    publication,
    retraction,
    unsigned_retraction,
)

KEY = nacl.signing.SigningKey.generate()
STRANGER = nacl.signing.SigningKey.generate()


def _read(event: breach_pb2.BreachEvent, key: nacl.signing.SigningKey = KEY):
    return read_breach_event(event.SerializeToString(), key.verify_key)


def test_published_event_is_verified_and_carries_its_version():
    checked = _read(publication(make_manifest("b-1", version=4), KEY))
    assert (checked.breach_id, checked.version) == ("b-1", 4)
    assert checked.manifest is not None
    assert checked.manifest.descriptions["da"].startswith("Patientjournaler")
    assert checked.retraction is None
    assert len(checked.manifest_sha256) == 64


def test_signed_retraction_is_verified_and_names_version_reason_and_time():
    checked = _read(retraction("b-1", 2, KEY, reason="published in error"))
    assert checked.manifest is None
    assert checked.retraction is not None
    assert (checked.breach_id, checked.version) == ("b-1", 2)
    assert checked.retraction.reason == "published in error"
    assert checked.retraction.retracted_at.tzinfo is UTC


def _tampered_statement() -> breach_pb2.BreachEvent:
    event = retraction("b-1", 1, KEY)
    document = json.loads(event.retraction.statement)
    document["version"] = 9
    event.retraction.statement = json.dumps(
        document, sort_keys=True, separators=(",", ":")
    ).encode()
    return event


def _other_envelope() -> breach_pb2.BreachEvent:
    event = retraction("b-1", 1, KEY)
    event.artifact.breach_id = "b-2"  # the signed statement names b-1
    return event


def _other_reason() -> breach_pb2.BreachEvent:
    event = retraction("b-1", 1, KEY)
    event.reason = "something else"
    return event


def _manifest_signature_as_retraction() -> breach_pb2.BreachEvent:
    """A manifest signature (other context) presented over the same bytes as a retraction."""
    signed = sign_manifest(make_manifest("b-1"), KEY)
    event = unsigned_retraction("b-1")
    event.retraction.statement = signed.manifest_bytes
    event.retraction.signature = signed.signature
    return event


@pytest.mark.parametrize(
    ("event", "key", "reason"),
    [
        (unsigned_retraction("b-1"), KEY, "RetractionSignatureError"),
        (retraction("b-1", 1, STRANGER), KEY, "RetractionSignatureError"),
        (_tampered_statement(), KEY, "RetractionSignatureError"),
        (_manifest_signature_as_retraction(), KEY, "RetractionSignatureError"),
        (_other_envelope(), KEY, "retraction_envelope_mismatch"),
        (_other_reason(), KEY, "retraction_envelope_mismatch"),
        (publication(make_manifest("b-1"), STRANGER), KEY, "ManifestSignatureError"),
        (breach_pb2.BreachEvent(kind=breach_pb2.BreachEvent.KIND_UNSPECIFIED), KEY, "unknown_kind"),
    ],
)
def test_bad_events_are_refused_with_a_reason(event, key, reason):
    with pytest.raises(BreachEventError) as info:
        _read(event, key)
    assert info.value.reason == reason


def test_undecodable_bytes_are_refused():
    with pytest.raises(BreachEventError) as info:
        read_breach_event(b"\xff\xff not a protobuf", KEY.verify_key)
    assert info.value.reason == "undecodable"


def test_a_validly_signed_retraction_of_a_bad_id_is_still_refused():
    """Even the operator's key cannot make `..` a breach id: the statement is checked."""
    statement = json.dumps(
        {
            "breach_id": "..",
            "reason": "x",
            "retracted_at": "2025-01-01T00:00:00Z",
            "retraction_format": 1,
            "version": 1,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    signed = breach_pb2.BreachRetraction(
        statement=statement, signature=KEY.sign(RETRACTION_CONTEXT + statement).signature
    )
    with pytest.raises(RetractionFormatError, match="breach_id"):
        verify_retraction(signed, KEY.verify_key)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Retraction("b", 1, "", datetime(2025, 1, 1, tzinfo=UTC)), "reason"),
        (lambda: Retraction("b", 1, "two\nlines", datetime(2025, 1, 1, tzinfo=UTC)), "one"),
        (lambda: Retraction("b", 0, "r", datetime(2025, 1, 1, tzinfo=UTC)), "version"),
        (lambda: Retraction("b", 1, "r", datetime(2025, 1, 1)), "UTC"),
    ],
)
def test_malformed_retractions_cannot_be_made(make, error):
    with pytest.raises(RetractionFormatError, match=error):
        make()


def test_retraction_statement_round_trips_canonically():
    made = Retraction.now("b-1", 3, "published in error")
    assert Retraction.from_bytes(made.to_bytes()) == made
    pretty = json.dumps(json.loads(made.to_bytes()), indent=1).encode()
    with pytest.raises(RetractionFormatError, match="canonical"):
        Retraction.from_bytes(pretty)
    signed = breach_pb2.BreachRetraction(statement=made.to_bytes(), signature=b"\x00" * 64)
    with pytest.raises(RetractionSignatureError):
        verify_retraction(signed, KEY.verify_key)


# --- versions: what moves a breach forward -------------------------------------


def test_newer_versions_supersede_and_older_ones_are_refused():
    versions = BreachVersions()
    v1, v2 = (_read(publication(make_manifest("b", version=v), KEY)) for v in (1, 2))
    assert versions.admit(v1) is Admission.NEW
    assert versions.admit(v1) is Admission.DUPLICATE  # the same bytes again: harmless
    assert versions.admit(v2) is Admission.NEW
    with pytest.raises(BreachEventError, match="replayed_publication"):
        versions.admit(v1)
    other_v2 = _read(publication(make_manifest("b", version=2, title="Other"), KEY))
    with pytest.raises(BreachEventError, match="conflicting_version"):
        versions.admit(other_v2)
    standing = versions.get("b")
    assert standing is not None
    assert (standing.version, standing.retracted) == (2, False)
    assert standing.manifest_sha256 == v2.manifest_sha256


def test_retractions_withdraw_once_and_replays_change_nothing():
    versions = BreachVersions()
    with pytest.raises(BreachEventError, match="unknown_breach"):
        versions.admit(_read(retraction("never", 1, KEY)))
    assert versions.get("never") is None
    v1, v2 = (_read(publication(make_manifest("b", version=v), KEY)) for v in (1, 2))
    versions.admit(v1)
    versions.admit(v2)
    with pytest.raises(BreachEventError, match="replayed_retraction"):
        versions.admit(_read(retraction("b", 1, KEY)))  # cannot withdraw v2
    assert versions.admit(_read(retraction("b", 2, KEY))) is Admission.NEW
    assert versions.admit(_read(retraction("b", 2, KEY))) is Admission.DUPLICATE
    for replay in (v1, v2):  # a retracted version never comes back
        with pytest.raises(BreachEventError, match="replayed_publication"):
            versions.admit(replay)
    v3 = _read(publication(make_manifest("b", version=3), KEY))
    assert versions.admit(v3) is Admission.NEW  # a newer publication may follow a retraction


def test_a_retraction_of_a_version_not_yet_seen_withdraws_the_breach():
    versions = BreachVersions()
    versions.admit(_read(publication(make_manifest("b", version=1), KEY)))
    assert versions.admit(_read(retraction("b", 3, KEY))) is Admission.NEW
    with pytest.raises(BreachEventError, match="replayed_publication"):
        versions.admit(_read(publication(make_manifest("b", version=3), KEY)))


# --- breach ids -----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["", "..", ".", "../x", "a/b", "a\x00", "-a", "a b", "a*", "a>", "é", "x" * 129]
)
def test_bad_breach_ids_are_refused_without_echoing_control_characters(bad):
    with pytest.raises(BreachIdError) as info:
        check_breach_id(bad)
    assert "\x00" not in str(info.value)


def test_paths_from_breach_ids_stay_in_their_folder(tmp_path: Path):
    folder = tmp_path / "breaches"
    folder.mkdir()
    assert path_in(folder, "alles-2025") == folder / "alles-2025"
    assert path_in(folder, "alles-2025", ".json") == folder / "alles-2025.json"
    (folder / "planted").symlink_to(tmp_path)
    with pytest.raises(BreachIdError, match="leaves"):
        path_in(folder, "planted")
    with pytest.raises(BreachIdError):
        path_in(folder, "..")
