"""``breachmatch``: the hospital's command line.

    breachmatch check  --patients FILE [--breach ID[,ID…] | --all] [--json OUT|-] [--csv OUT|-]
    breachmatch watch  --patients FILE [--notify] [--out-dir DIR]
    breachmatch notify --from RESULTS.json [--patients FILE] [--channels email,sms,digital_post]
    breachmatch status [--breach ID] [--json OUT|-]
    breachmatch certificate request --tenant ID | install BUNDLE   (joining as a hospital)
    breachmatch inspect --patients FILE [--rows N] [--json OUT|-]

Every flag can also be set through the environment as ``BREACHMATCH_<FLAG>``
(``--tls-dir`` → ``BREACHMATCH_TLS_DIR``); ``--help`` on each command names
them. Reports go to stdout, notices, progress and errors to stderr. Exit
status: 0 done, 1 a problem the message explains, 2 wrong usage, 69 the
matcher or notifier could not be reached (after ``--retries`` tries), 70 an
internal error (a bug: one line naming where; ``--debug`` prints the
traceback, identifier-shaped text scrubbed), 141 the reader of stdout went
away (``breachmatch status | head``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import breachmatch.quiet_grpc_core  # noqa: F401 (sets GRPC_VERBOSITY before gRPC loads)
from breachmatch import logs, tracing
from breachmatch.certificate_cli import add_certificate_arguments, run_certificate
from breachmatch.client import Backoff, CheckResult, Client, ClientError, PipelineOptions
from breachmatch.client.api import PatientSource
from breachmatch.client.errors import PatientsFileError, ServiceUnavailableError
from breachmatch.client.outreach import CHANNELS, DEFAULT_CHANNELS
from breachmatch.client.patients import inspect_patients
from breachmatch.client.report import (
    csv_text,
    json_text,
    load_json,
    render_status,
    render_summary,
    status_document,
    to_document,
    write_json,
)
from breachmatch.client.state import default_state_dir
from breachmatch.filter import BreachIdError, path_in
from breachmatch.identifiers import Strength
from breachmatch.keys import write_secret_file
from breachmatch.pipes import quiet_on_closed_pipe
from breachmatch.reachability import EXIT_UNREACHABLE
from breachmatch.readers import FORMATS
from breachmatch.settings import (
    add_env_argument,
    add_log_arguments,
    add_version_argument,
    env_name,
    host_port,
    non_negative_int,
    positive_int,
    text_encoding,
)

EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE
#: ``--json -``, ``--csv -``: write the document to stdout.
STDOUT = Path("-")


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    add_env_argument(
        parser, "--matcher", type=host_port, default="localhost:50051", help="matcher HOST:PORT"
    )
    add_env_argument(
        parser,
        "--tls-dir",
        type=Path,
        help="directory with ca.crt, tls.crt, tls.key (this hospital's client certificate)",
    )
    add_env_argument(
        parser,
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="token cache, pinned operator key, downloaded breach filters",
    )
    add_env_argument(
        parser,
        "--cache-key",
        type=Path,
        help="32-byte key file encrypting the token cache; created 0600 if absent. Keep it "
        "outside the state dir (refused inside); default ~/.config/breachmatch/cache.key",
    )
    add_env_argument(
        parser,
        "--operator-key",
        type=Path,
        help="operator's Ed25519 verify key (hex); without it the key is pinned on first use",
    )
    add_env_argument(
        parser,
        "--retries",
        type=positive_int,
        default=Backoff().attempts,
        help="tries per call while the service is unreachable (exponential backoff)",
    )
    add_env_argument(
        parser, "--quiet", action="store_true", help="no progress bar, no list of matched patients"
    )
    add_log_arguments(parser, default_level="WARNING")
    tracing.add_arguments(parser)


def _patient_flags(parser: argparse.ArgumentParser, required: bool) -> None:
    add_env_argument(
        parser,
        "--patients",
        type=Path,
        help="patient export: CSV/TSV/JSON or FHIR R4 Patient NDJSON"
        + ("" if required else " (default: the file named in the results)"),
    )
    add_env_argument(
        parser, "--format", default="auto", choices=FORMATS, help="format of the patient export"
    )
    add_env_argument(
        parser,
        "--encoding",
        type=text_encoding,
        help="text encoding of the export (default: sniffed from its bytes)",
    )
    add_env_argument(
        parser, "--map", type=Path, help="JSON column mapping for headers the synonyms miss"
    )
    add_env_argument(parser, "--facility", help="facility whose MRNs the export holds")


def _channel_list(text: str) -> list[str]:
    """argparse `type=`: channel names, comma-separated, each one we know."""
    channels = [c.strip() for c in text.split(",") if c.strip()]
    if not channels or set(channels) - set(CHANNELS):
        raise argparse.ArgumentTypeError(f"takes a list from {', '.join(CHANNELS)}")
    return channels


def _notifier_address(parser: argparse.ArgumentParser) -> None:
    add_env_argument(parser, "--notifier", type=host_port, help="notifier (Outreach) HOST:PORT")


def _notifier_flags(parser: argparse.ArgumentParser) -> None:
    _notifier_address(parser)
    add_env_argument(
        parser,
        "--notifier-key",
        type=Path,
        help="notifier's X25519 public key (hex); default: as the matcher advertises it",
    )
    add_env_argument(
        parser,
        "--channels",
        type=_channel_list,
        default=",".join(DEFAULT_CHANNELS),
        help=f"notice channels in order of preference, from {', '.join(CHANNELS)}",
    )
    add_env_argument(
        parser,
        "--min-strength",
        default=Strength.STRONG.value,
        choices=[s.value for s in Strength],
        help="notify strong matches only (default), or medium ones too (review them first!)",
    )


def _pipeline_flags(parser: argparse.ArgumentParser) -> None:
    add_env_argument(
        parser,
        "--batch-size",
        type=positive_int,
        default=1024,
        help="blinded elements per Evaluate batch",
    )
    add_env_argument(
        parser, "--concurrency", type=positive_int, default=2, help="Evaluate streams run at once"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breachmatch",
        description="Check this hospital's patients against published data breaches, "
        "without sending any identifier to anyone.",
    )
    add_version_argument(parser, "breachmatch")
    add_env_argument(
        parser,
        "--debug",
        action="store_true",
        help="print the traceback of an internal error (identifier-shaped text scrubbed)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="check patients against breaches")
    _patient_flags(check, required=True)
    add_env_argument(check, "--breach", help="breach id(s) to check, comma-separated")
    add_env_argument(check, "--all", action="store_true", help="every served breach (default)")
    add_env_argument(
        check, "--json", type=Path, help="write the results as JSON (version 1); - for stdout"
    )
    add_env_argument(check, "--csv", type=Path, help="write one CSV row per match; - for stdout")
    _pipeline_flags(check)
    _connection_flags(check)

    watch = commands.add_parser("watch", help="check each breach as soon as it is published")
    _patient_flags(watch, required=True)
    add_env_argument(
        watch, "--out-dir", type=Path, help="JSON results per breach (default: state-dir/results)"
    )
    add_env_argument(watch, "--notify", action="store_true", help="submit notices per policy")
    add_env_argument(
        watch,
        "--max-events",
        type=non_negative_int,
        default=0,
        help="stop after N breach events (0: never)",
    )
    _notifier_flags(watch)
    _pipeline_flags(watch)
    _connection_flags(watch)

    notify = commands.add_parser("notify", help="submit sealed notices for the matches found")
    add_env_argument(notify, "--from", type=Path, help="results JSON written by check --json")
    _patient_flags(notify, required=False)
    _notifier_flags(notify)
    _connection_flags(notify)

    inspect = commands.add_parser(
        "inspect",
        help="show what a check would read from the patient export (no connection needed)",
    )
    _patient_flags(inspect, required=True)
    add_env_argument(
        inspect,
        "--rows",
        type=non_negative_int,
        default=0,
        help="read only the first N rows (0: all)",
    )
    add_env_argument(
        inspect, "--json", type=Path, help="also write the report as JSON; - for stdout"
    )
    add_log_arguments(inspect, default_level="WARNING")

    status = commands.add_parser("status", help="delivery status of submitted notices")
    add_env_argument(status, "--breach", help="only notices about this breach")
    add_env_argument(
        status,
        "--json",
        type=Path,
        help="write the notices as JSON instead of a table; - for stdout",
    )
    _notifier_address(status)
    _connection_flags(status)

    certificate = commands.add_parser(
        "certificate", help="join: make a key and signing request, install the operator's bundle"
    )
    add_certificate_arguments(certificate)
    return parser


def _require(args: argparse.Namespace, parser: argparse.ArgumentParser, *flags: str) -> None:
    for flag in flags:
        if getattr(args, flag.lstrip("-").replace("-", "_"), None) in (None, ""):
            parser.error(f"{flag} is required (or set {env_name(flag)})")


def _client(args: argparse.Namespace) -> Client:
    backoff = Backoff(attempts=args.retries)
    pipeline = PipelineOptions(
        batch_size=getattr(args, "batch_size", 1024),
        streams=getattr(args, "concurrency", 2),
        backoff=backoff,
    )
    return Client(
        args.matcher,
        args.tls_dir,
        state_dir=args.state_dir,
        cache_key=args.cache_key,
        operator_key=args.operator_key,
        notifier=getattr(args, "notifier", None),
        notifier_key=getattr(args, "notifier_key", None),
        pipeline=pipeline,
        backoff=backoff,
        progress=sys.stderr.isatty() and not args.quiet,
        notice=_notice,
    )


def _notice(message: str) -> None:
    print(f"breachmatch: {message}", file=sys.stderr, flush=True)


def _patient_source(args: argparse.Namespace, default: Path | None = None) -> PatientSource:
    """--patients (or ``default``) read with --format, --map, --facility and --encoding."""
    path: Path | None = args.patients or default
    if path is None:
        raise ClientError("--patients FILE is required")
    return PatientSource(path, args.format, args.map, args.facility, args.encoding)


def _run_check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    _require(args, parser, "--patients", "--tls-dir")
    if args.breach and args.all:
        parser.error("give --breach ID or --all, not both")
    breach_ids = [b.strip() for b in args.breach.split(",") if b.strip()] if args.breach else None
    with _client(args) as client:
        result = client.check(_patient_source(args), breach_ids)
    if args.json is not None and args.json == args.csv == STDOUT:
        parser.error("only one of --json and --csv can write to stdout (-)")
    to_stdout = STDOUT in (args.json, args.csv)
    # A document on stdout stays parseable: the summary goes to stderr then.
    print(
        render_summary(result, show_patients=not args.quiet),
        file=sys.stderr if to_stdout else sys.stdout,
    )
    if args.json:
        _output(args.json, json_text(to_document(result)))
    if args.csv:
        _output(args.csv, csv_text(result))


def _output(path: Path, text: str) -> None:
    """Write a report to `path`, or to stdout for ``-``."""
    if path == STDOUT:
        sys.stdout.write(text)
    else:
        write_secret_file(path, text)


#: Why the notifier refused a whole breach's notices, by `breachmatch.refusals` state.
_REFUSED_BREACH = {
    "retracted": "was retracted by the operator",
    "unprovable": "has no proof index (the operator must publish it again)",
}


def _print_notified(client: Client, result: CheckResult, args: argparse.Namespace) -> int:
    """Submit and report; how many notices the notifier refused."""
    done = client.notify(
        result,
        # The proofs are the patients' match keys again: read with the same mapping.
        _patient_source(args, Path(result.patients_file)),
        channels=args.channels,
        min_strength=Strength(args.min_strength),
    )
    print(
        f"Notices: {done.submitted.accepted} accepted, {done.submitted.already_submitted} "
        f"already submitted before (not sent again), {len(done.submitted.refused)} refused; "
        f"left out: {done.plan.below_strength} medium-only matches (--min-strength), "
        f"{done.plan.missing_patients} patients no longer in the export, "
        f"{done.plan.unproven} matches that no longer hold."
    )
    for refused in done.submitted.refused:
        print(
            f"  refused: patient {refused.patient_id}, breach {refused.breach_id}: "
            f"{refused.reason} ({refused.detail})"
        )
    for breach_id, state in sorted(done.submitted.refused_breaches.items()):
        reason = _REFUSED_BREACH.get(state, "is not published")
        _notice(
            f"breach {breach_id} {reason}: the notifier refused its notices, none were sent "
            "for it (the other breaches' were)"
        )
    if done.submitted.refused_breaches:
        print(f"Not sent: {done.submitted.not_sent} notices of refused breaches (see above).")
    # A withdrawn breach is the operator's decision, not a fault of this hospital's
    # notices: only items refused one by one make the command fail.
    return len(done.submitted.refused)


def _run_watch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    _require(args, parser, "--patients", "--tls-dir")
    if args.notify:
        _require(args, parser, "--notifier")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _client(args) as client:
        out_dir = args.out_dir or client.state.watch_results
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

        def on_result(result: CheckResult) -> None:
            for summary in result.summaries:
                write_json(result, path_in(out_dir, summary.breach_id, ".json"))
            print(render_summary(result, show_patients=not args.quiet), flush=True)

        client.watch(
            _patient_source(args),
            on_result,
            stop=stop,
            notify=(
                (lambda result: _print_notified(client, result, args)) if args.notify else None
            ),
            max_events=args.max_events,
        )


def _run_notify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    _require(args, parser, "--from", "--tls-dir", "--notifier")
    result = load_json(getattr(args, "from"))  # "from" is a keyword: no attribute syntax
    with _client(args) as client:
        refused = _print_notified(client, result, args)
    if refused:
        raise ClientError(f"the notifier refused {refused} notices; the reasons are listed above")


def _run_status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    _require(args, parser, "--tls-dir", "--notifier")
    with _client(args) as client:
        statuses = client.status(args.breach)
    if args.json:
        _output(args.json, json_text(status_document(statuses)))
    else:
        print(render_status(statuses))


def _run_inspect(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    _require(args, parser, "--patients")
    report = inspect_patients(args.patients, args.format, args.map, args.facility, args.rows)
    human = sys.stderr if args.json == STDOUT else sys.stdout
    print(report.render(), file=human)
    if report.rows_without_patient_id:
        print(
            f"no id      {report.rows_without_patient_id} row(s) without a patient id: results "
            'name them row-<n>; map your id column, e.g. {"columns": {"Patientnr": '
            '"patient_id"}}',
            file=human,
        )
    if args.json:
        _output(args.json, json_text(report.to_dict()))
    readable = report.rows_sampled - sum(report.bad_rows.values())
    usable = readable - report.rows_without_keys
    if usable <= 0:
        raise PatientsFileError(
            f"no row of {args.patients} gives a usable match key: a check would find nothing. "
            "Map the identifier columns with --map (see the columns above)"
        )
    print(
        f"ready      {usable} of {report.rows_sampled} rows give at least one match key",
        file=human,
    )


_COMMANDS = {
    "check": _run_check,
    "watch": _run_watch,
    "notify": _run_notify,
    "status": _run_status,
    "inspect": _run_inspect,
}


def _internal_error(error: BaseException, debug: bool) -> int:
    """A bug: one line saying where (its message could quote a patient row), not what."""
    print(
        f"breachmatch: internal error: {logs.describe_unexpected(error)} "
        "(a bug; --debug prints the traceback)",
        file=sys.stderr,
    )
    if debug:
        print(logs.scrubbed_traceback(error), file=sys.stderr)
    return EXIT_INTERNAL


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure_logging("breachmatch", level=args.log_level, fmt=args.log_format)
    if "traces_exporter" in vars(args):  # a command that talks to the services
        tracing.configure("client", args)
    try:
        if args.command == "certificate":
            return run_certificate(args, sys.stdout, sys.stderr)
        _COMMANDS[args.command](args, parser)
    except ServiceUnavailableError as error:
        print(f"breachmatch: error: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (ClientError, BreachIdError) as error:
        print(f"breachmatch: error: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    except OSError as error:
        if error.filename is None:  # not a file of ours: a closed stdout, or a bug
            if isinstance(error, BrokenPipeError):
                raise  # `quiet_on_closed_pipe` exits 141
            return _internal_error(error, args.debug)
        print(f"breachmatch: error: {error.filename}: {error.strerror}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        print("breachmatch: interrupted; a re-run continues from the token cache", file=sys.stderr)
        return EXIT_PROBLEM
    except Exception as error:
        return _internal_error(error, args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
