"""The hospital's state directory: the cache key kept out of it, breach paths kept in it."""

from __future__ import annotations

import json
from pathlib import Path

import nacl.signing
import pytest

from breachmatch.cli import main
from breachmatch.client.breaches import forget_breach
from breachmatch.client.errors import ArtifactRefusedError, ConfigurationError
from breachmatch.client.state import StateDir, default_cache_key
from breachmatch.client.versions import SeenBreaches
from breachmatch.filter import BreachEventError, check_breach_event
from breachmatch_dev import DevPki
from breachmatch_dev.breach_events import make_manifest, publication, retraction

KEY = nacl.signing.SigningKey.generate()


def test_the_default_cache_key_lives_outside_the_default_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    state = StateDir.open(tmp_path / "state" / "breachmatch")
    assert state.cache_key_path(None) == tmp_path / "config" / "breachmatch" / "cache.key"
    assert default_cache_key() == tmp_path / "config" / "breachmatch" / "cache.key"
    assert state.cache_key_path(tmp_path / "elsewhere.key") == tmp_path / "elsewhere.key"


@pytest.mark.parametrize("inside", ["cache.key", "sub/dir/cache.key", "./x/../cache.key"])
def test_a_cache_key_inside_the_state_directory_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, inside: str
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    state = StateDir.open(tmp_path / "state")
    with pytest.raises(ConfigurationError) as refused:
        state.cache_key_path(state.root / inside)
    message = str(refused.value)
    assert "is inside the state directory" in message
    assert f"--cache-key {tmp_path / 'config' / 'breachmatch' / 'cache.key'}" in message
    assert "mv " in message


def test_a_symlinked_way_into_the_state_directory_is_refused_too(tmp_path: Path):
    state = StateDir.open(tmp_path / "state")
    (tmp_path / "link").symlink_to(state.root)
    with pytest.raises(ConfigurationError, match="inside the state directory"):
        state.cache_key_path(tmp_path / "link" / "cache.key")


def test_the_cli_refuses_a_cache_key_in_the_state_directory(
    dev_pki: DevPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    state = tmp_path / "state"
    argv = ["check", "--patients", "p.csv", "--tls-dir", str(dev_pki.tenant_dir("hospital-a"))]
    code = main([*argv, "--state-dir", str(state), "--cache-key", str(state / "cache.key")])
    assert code == 1
    assert "is inside the state directory" in capsys.readouterr().err
    assert not (state / "cache.key").exists()  # refused before it was created


def test_forget_breach_refuses_ids_and_links_that_leave_the_breaches_folder(tmp_path: Path):
    state = StateDir.open(tmp_path / "state")
    for name in ("tokens.sqlite", "operator-key.pin", "submitted.sqlite"):
        (state.root / name).write_text("precious")
    state.breaches.mkdir()
    (state.breaches / "kept").mkdir()
    (state.breaches / "gone").mkdir()
    (state.breaches / "link").symlink_to(state.root)
    for bad in ("..", ".", "../..", "/", "a/../..", "", "link"):
        with pytest.raises(ArtifactRefusedError, match="nothing was stored or deleted"):
            forget_breach(state.breaches, bad)
    forget_breach(state.breaches, "gone")
    forget_breach(state.breaches, "never-stored")
    assert sorted(p.name for p in state.breaches.iterdir()) == ["kept", "link"]
    assert all((state.root / n).read_text() == "precious" for n in ("tokens.sqlite",))


def test_versions_seen_survive_a_restart_and_refuse_replays(tmp_path: Path):
    path = tmp_path / "breach-versions.json"
    v1, v2 = (publication(make_manifest("b", version=v), KEY) for v in (1, 2))
    seen = SeenBreaches.open(path)
    seen.admit(check_breach_event(v1, KEY.verify_key))
    seen.admit(check_breach_event(v2, KEY.verify_key))
    assert path.stat().st_mode & 0o777 == 0o600
    again = SeenBreaches.open(path)  # the next run
    with pytest.raises(BreachEventError, match="replayed_publication"):
        again.admit(check_breach_event(v1, KEY.verify_key))
    again.admit(check_breach_event(retraction("b", 2, KEY), KEY.verify_key))
    standing = SeenBreaches.open(path).get("b")
    assert standing is not None
    assert (standing.version, standing.retracted) == (2, True)


def test_two_users_of_the_record_never_write_back_a_stale_version(tmp_path: Path):
    """A watch and the check it runs both record versions; neither may undo the other."""
    path = tmp_path / "breach-versions.json"
    watch, check = SeenBreaches.open(path), SeenBreaches.open(path)
    x1, x2 = (publication(make_manifest("x", version=v), KEY) for v in (1, 2))
    watch.admit(check_breach_event(x1, KEY.verify_key))
    check.admit(check_breach_event(x2, KEY.verify_key))
    watch.admit(check_breach_event(publication(make_manifest("y"), KEY), KEY.verify_key))
    standing = SeenBreaches.open(path).get("x")
    assert standing is not None
    assert standing.version == 2


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps({"format": 9, "breaches": {}}),
        json.dumps({"format": 1, "breaches": {"..": {"version": 1, "retracted": False,
                                                     "manifest_sha256": ""}}}),
        json.dumps({"format": 1, "breaches": {"b": {"version": "1"}}}),
    ],
)  # fmt: skip
def test_an_unreadable_record_of_versions_is_refused_not_reset(tmp_path: Path, text: str):
    path = tmp_path / "breach-versions.json"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match="restore it from a backup"):
        SeenBreaches.open(path)
    assert path.read_text() == text
