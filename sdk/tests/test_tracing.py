"""Trace settings: off unless asked, the standard variables, and a clear refusal of bad values.

Every ``OTEL_*`` setting is also walked by tests/test_settings.py (a bad value
from a flag or the environment is exit 2 on every command); these tests say
what the good values mean.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from breachmatch import build, tracing
from breachmatch import cli as hospital_cli

VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _config(argv: Sequence[str] = ()) -> tracing.TracingConfig:
    parser = argparse.ArgumentParser()
    tracing.add_arguments(parser)
    return tracing.TracingConfig.from_args(parser.parse_args(argv))


def _exporter_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "Otel" in t.name or "otel" in t.name]


def test_unset_means_off_no_provider_and_no_exporter_thread() -> None:
    config = _config()
    assert config.endpoint is None
    before = _exporter_threads()
    assert tracing.build_provider("matcher", config) is None
    assert _exporter_threads() == before


def test_an_endpoint_alone_turns_export_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert _config().endpoint == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example:443/in")
    assert _config().endpoint == "https://traces.example:443/in"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert _config().endpoint is None


def test_otlp_without_an_endpoint_goes_to_the_standard_local_collector() -> None:
    assert _config(["--traces-exporter", "otlp"]).endpoint == "http://localhost:4318/v1/traces"


def test_an_exporting_provider_batches_in_a_thread_and_names_the_build() -> None:
    provider = tracing.build_provider("matcher", _config(["--otlp-endpoint", "http://127.0.0.1:9"]))
    assert provider is not None
    try:
        assert _exporter_threads()
        attributes = provider.resource.attributes
        assert attributes[SERVICE_NAME] == "breachmatch-matcher"
        assert attributes[SERVICE_VERSION] == build.version("matcher")
        assert attributes["vcs.ref.head.revision"] == build.git_sha()
    finally:
        provider.shutdown()


def test_samplers_follow_the_standard_names() -> None:
    config = _config(
        ["--traces-sampler", "parentbased_traceidratio", "--traces-sampler-arg", "0.25"]
    )
    sampler = tracing._sampler(config)
    assert isinstance(sampler, ParentBased)
    assert "0.25" in sampler.get_description()
    alone = tracing._sampler(_config(["--traces-sampler", "traceidratio"]))
    assert isinstance(alone, TraceIdRatioBased)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "must be one of http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "must be a URL like http://HOST:4318"),
        ("OTEL_TRACES_EXPORTER", "jaeger", "must be one of otlp, none"),
        ("OTEL_TRACES_SAMPLER_ARG", "2", "must be a number from 0 to 1"),
    ],
)
def test_a_bad_otel_value_stops_the_command_with_exit_2_naming_it(
    variable: str,
    value: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        hospital_cli.main(["status"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"{variable}='{value}': {expected}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("sha", "shown"),
    [("0123abcDEF4567", "0123abcdef4567"), ("", "unknown"), ("v1.2; rm -rf", "unknown")],
)
def test_the_git_sha_is_a_hex_revision_or_unknown(
    sha: str, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(build.GIT_SHA_VARIABLE, sha)
    assert build.git_sha() == shown


#: Run in a fresh interpreter: a test process may already hold the `spans` fixture's provider.
_PRODUCING_WITHOUT_PROVIDER = """
import json
from opentelemetry import context
from breachmatch import tracing
with tracing.producing("breachmatch.x.t", "X") as alone:
    pass
token = context.attach(tracing.extract({"traceparent": PARENT}))
with tracing.producing("breachmatch.x.t", "X") as within:
    pass
context.detach(token)
print(json.dumps([alone, within]))
"""


def test_with_tracing_off_a_publish_carries_no_headers_but_passes_a_callers_trace_on() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    code = _PRODUCING_WITHOUT_PROVIDER.replace("PARENT", repr(parent))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    alone, within = json.loads(done.stdout)
    assert alone == {}
    assert within == {"traceparent": parent}
