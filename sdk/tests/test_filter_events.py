"""One reading of BREACHES stream events for every service that follows it."""

from __future__ import annotations

import io
import os
from datetime import date

import nacl.signing
import pytest

from breachmatch.filter import (
    BreachEventError,
    FilterWriter,
    Manifest,
    read_breach_event,
    sign_manifest,
)
from breachmatch.v1 import breach_pb2

KEY = nacl.signing.SigningKey.generate()


def _published() -> breach_pb2.BreachEvent:
    writer = FilterWriter()
    writer.add(os.urandom(64), 1)
    summary = writer.finish(io.BytesIO())
    manifest = Manifest.for_body(
        summary, breach_id="b-1", title="t", organisation="o", breach_date=date(2025, 9, 1),
        added_date=date(2025, 9, 2), description="", verified=True, sensitive=True,
        oprf_key_id="k1",
    )  # fmt: skip
    artifact = sign_manifest(manifest, KEY).to_artifact()
    return breach_pb2.BreachEvent(kind=breach_pb2.BreachEvent.KIND_PUBLISHED, artifact=artifact)


def test_published_event_is_verified_and_retraction_has_no_manifest():
    checked = read_breach_event(_published().SerializeToString(), KEY.verify_key)
    assert checked.breach_id == "b-1"
    assert checked.manifest is not None
    assert checked.manifest.title == "t"
    retracted = breach_pb2.BreachEvent(
        kind=breach_pb2.BreachEvent.KIND_RETRACTED,
        artifact=breach_pb2.BreachArtifact(breach_id="b-1"),
    )
    assert read_breach_event(retracted.SerializeToString(), KEY.verify_key).manifest is None


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        (b"\xff\xff not a protobuf", KEY.verify_key, "undecodable"),
        (
            breach_pb2.BreachEvent(
                kind=breach_pb2.BreachEvent.KIND_UNSPECIFIED
            ).SerializeToString(),
            KEY.verify_key,
            "unknown_kind",
        ),
        (
            _published().SerializeToString(),
            nacl.signing.SigningKey.generate().verify_key,
            "ManifestSignatureError",
        ),
    ],
)
def test_bad_events_are_refused_with_a_reason(data, key, reason):
    with pytest.raises(BreachEventError) as info:
        read_breach_event(data, key)
    assert info.value.reason == reason
