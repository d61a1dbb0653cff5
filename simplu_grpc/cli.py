"""The ``simplu-grpc`` command: ``serve``, ``dev`` (the whole local stack), ``migrate``, the
business-info table's one-shot migrations (``rewrite-items``, ``index-members``) and
``move-to-citrus`` (a single-database deployment's locations onto their Citrus shards).

Configuration comes from the environment (DESIGN §9); a bad value stops the command with
``configuration error: <message naming the variable>`` and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from simplu_grpc.errors import SimpluError
from simplu_grpc.logs import configure_logging
from simplu_grpc.settings import Settings, SettingsError

EXIT_FAILURE = 1
EXIT_CONFIGURATION = 2
# ``simplu-grpc migrate`` may build indexes on big shards: far longer than MigrateShard's
# budget, still bounded (a shard whose lock is held forever must not hang a deploy job).
MIGRATE_TIMEOUT_SECONDS = 3600.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simplu-grpc",
        description="The Simplu API as a gRPC service. Configured by environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the gRPC server until SIGTERM/SIGINT")
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="worker processes sharing the port with SO_REUSEPORT (default: SIMPLU_WORKERS or 1)",
    )
    serve.add_argument("--port", type=int, default=None, help="listen port (default: GRPC_PORT or 50051)")
    commands.add_parser(
        "dev",
        help="start PostgreSQL, the Citrus emulator, moto and the server locally; print a token",
    )
    commands.add_parser("migrate", help="apply pending schema migrations to every shard (or the database)")
    for name, help_text in (
        (
            "rewrite-items",
            "rewrite business items of the original system in the current shape, in place",
        ),
        ("index-members", "give every member of every business its membership item"),
    ):
        migration = commands.add_parser(
            name,
            help=f"{help_text} (run once after upgrading; idempotent: a second run writes nothing,"
            " a stopped run resumes by running again)",
        )
        migration.add_argument(
            "--dry-run", action="store_true", help="count what it would write, write nothing"
        )
        migration.add_argument(
            "--start-after",
            default=None,
            metavar="ID",
            help="resume after this item id (the last one reported)",
        )
    purge = commands.add_parser(
        "purge-businesses",
        help="remove the data of businesses deleted longer ago than BUSINESS_RETENTION_DAYS from every"
        " shard, Citrus and the business table (bounded batches; a stopped run resumes by running again)",
    )
    purge.add_argument("--business-id", default=None, metavar="ID", help="only this business")
    purge.add_argument(
        "--batch-size", type=_positive_int, default=500, help="rows per table per batch (default 500)"
    )
    adopt = commands.add_parser(
        "move-to-citrus",
        help="move every location of the single database (DATABASE_*) onto the shard Citrus"
        " (CITRUS_SERVER_URL) assigns it, online, one location after the other; resumable",
    )
    adopt.add_argument(
        "--dry-run", action="store_true", help="list the locations and their moves, move nothing"
    )
    adopt.add_argument(
        "--finalize",
        action="store_true",
        help="delete the single database's copy of every switched location (after the servers use Citrus)",
    )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _dev_tools_missing() -> list[str]:
    """What the dev stack needs that this installation lacks: the dev extras (moto) are not in
    the image, and neither are PostgreSQL's server binaries (unless SIMPLU_DEV_PG names a server)."""
    missing = [] if importlib.util.find_spec("moto") is not None else ["the dev extras (moto)"]
    # Only the binary lookup (stdlib), not the stack, whose imports need the dev extras.
    from simplu_grpc.devstack.postgres import find_pg_bin

    if not os.environ.get("SIMPLU_DEV_PG") and find_pg_bin() is None:
        missing.append("PostgreSQL server binaries (initdb, pg_ctl) or SIMPLU_DEV_PG")
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "dev":
            missing = _dev_tools_missing()
            if missing:
                print(
                    f"simplu-grpc dev starts the local development stack, which is not included in this"
                    f" installation (missing: {', '.join(missing)}). It runs from a source checkout:"
                    " `make run`.",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
            # Imported here: production code paths never import the devstack.
            from simplu_grpc.devstack.stack import run_dev

            run_dev()
            return 0
        settings = Settings.from_env()
        if args.command == "serve":
            return _serve(settings, workers=args.workers, port=args.port)
        if args.command in ("index-members", "rewrite-items"):
            return _table_migration(
                args.command, settings, dry_run=args.dry_run, start_after=args.start_after
            )
        if args.command == "purge-businesses":
            return _purge(settings, business_id=args.business_id, batch_size=args.batch_size)
        if args.command == "move-to-citrus":
            return _move_to_citrus(settings, finalize=args.finalize, dry_run=args.dry_run)
        return _migrate(settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIGURATION
    except SimpluError as exc:
        # E.g. Citrus unreachable while listing shards to migrate: say what, no traceback.
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE


def _serve(settings: Settings, *, workers: int | None, port: int | None) -> int:
    from simplu_grpc.server import StartupError, serve

    if workers is not None:
        settings = dataclasses.replace(settings, workers=workers)
    if port is not None:
        settings = dataclasses.replace(settings, grpc_port=port)
    try:
        serve(settings)
    except StartupError as exc:
        print(f"startup error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


@contextlib.contextmanager
def _errors_only_logging() -> Iterator[None]:
    """Log only errors, as scrubbed JSON lines, for the duration; then restore the previous setup.

    ``migrate`` prints every outcome itself, one line each; without a handler, Python's
    last-resort handler would print each retry warning of the Citrus client, unscrubbed.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("ERROR")
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def _migrate(settings: Settings) -> int:
    from simplu_grpc import context
    from simplu_grpc.context import Deadline
    from simplu_grpc.metrics import Metrics
    from simplu_grpc.wiring import Lifecycle, build_citrus, build_migrations, build_shard_source

    failed = False
    life = Lifecycle(metrics=Metrics())
    try:
        citrus = build_citrus(settings, life)
        migrations = build_migrations(
            settings,
            build_shard_source(settings, citrus),
            timeout_seconds=MIGRATE_TIMEOUT_SECONDS,
            connect_timeout_seconds=settings.shard_connect_timeout_seconds,
        )
        with _errors_only_logging(), context.bind(deadline=Deadline.after(MIGRATE_TIMEOUT_SECONDS)):
            outcomes = migrations.migrate_all()
    finally:
        life.close()
    for outcome in outcomes:
        if outcome.version_before is None or outcome.version_after is None:
            failed = True
            print(f"{outcome.shard_id} ({outcome.target}): FAILED {outcome.error}")
        else:
            applied = ", ".join(outcome.applied) or "nothing to apply"
            print(
                f"{outcome.shard_id} ({outcome.target}): version {outcome.version_before} -> "
                f"{outcome.version_after} ({applied})"
            )
    if not outcomes:
        print("no shards to migrate")
    return EXIT_FAILURE if failed else 0


def _move_to_citrus(settings: Settings, *, finalize: bool, dry_run: bool) -> int:
    """One line per location: where it goes, its move id and phase."""
    from simplu_grpc.domain.location_moves.adoption import Adopted
    from simplu_grpc.domain.location_moves.model import Phase
    from simplu_grpc.move_wiring import run_move_to_citrus

    def report(outcome: Adopted) -> None:
        error = f" ({outcome.error})" if outcome.error else ""
        print(
            f"{outcome.business_id}/{outcome.location_id} -> {outcome.target_shard}:"
            f" {outcome.phase.value} {outcome.move_id}{error}",
            flush=True,
        )

    with _errors_only_logging():
        outcomes = run_move_to_citrus(settings, finalize=finalize, dry_run=dry_run, on_done=report)
    if not outcomes:
        print("no locations with resources in the database")
    return EXIT_FAILURE if any(o.phase is Phase.FAILED for o in outcomes) else 0


def _table_migration(command: str, settings: Settings, *, dry_run: bool, start_after: str | None) -> int:
    """``rewrite-items`` or ``index-members``: progress on stderr, the counts on stdout."""
    from simplu_grpc.adapters.dynamodb.business_migrations import index_members, rewrite_items
    from simplu_grpc.metrics import Metrics
    from simplu_grpc.wiring import Lifecycle, build_business_store

    def progress(report: Any) -> None:
        # The last id scanned, for --start-after should the run stop.
        print(f"scanned through {report.last_id}", file=sys.stderr)

    life = Lifecycle(metrics=Metrics())
    try:
        with _errors_only_logging():
            store = build_business_store(settings, life)
            if command == "index-members":
                index = index_members(store, dry_run=dry_run, start_after=start_after, on_page=progress)
            else:
                rewrite = rewrite_items(store, dry_run=dry_run, start_after=start_after, on_page=progress)
    finally:
        life.close()
    done = "would be written (dry run)" if dry_run else "written"
    if command == "index-members":
        print(
            f"{index.businesses} businesses, {index.memberships} memberships,"
            f" {index.missing} membership items {done}"
        )
        return 0
    print(
        f"{rewrite.businesses} businesses, {rewrite.current} already current,"
        f" {rewrite.rewritten} {done.replace('written', 'rewritten')},"
        f" {rewrite.changed_meanwhile} changed meanwhile (run again), {len(rewrite.unreadable)} unreadable"
    )
    for item_id in rewrite.unreadable:
        print(f"unreadable (left as it is): {item_id}", file=sys.stderr)
    return EXIT_FAILURE if rewrite.unreadable or rewrite.changed_meanwhile else 0


def _purge(settings: Settings, *, business_id: str | None, batch_size: int) -> int:
    """``purge-businesses``: progress on stderr (one line per batch), what was purged on stdout."""
    from simplu_grpc.wiring import build_purge

    def progress(report: Any) -> None:
        print(f"batch {report.batches}: rows deleted so far {report.rows}", file=sys.stderr)

    purge, close = build_purge(settings, batch_size=batch_size, on_batch=progress)
    try:
        with _errors_only_logging():
            report = purge.purge(business_id) if business_id else purge.purge_due()
    finally:
        close()
    for purged in report.purged:
        print(f"purged {purged}")
    rows = sum(report.rows.values())
    print(
        f"{len(report.purged)} businesses purged, {rows} shard rows deleted in {report.batches} batches,"
        f" {report.unregistered} Citrus registrations removed"
    )
    if report.citrus_unsupported:
        print("Citrus offers no way to remove registrations: they were left", file=sys.stderr)
    if business_id and not report.purged:
        print(f"{business_id}: not purged (missing, not deleted, or still within the retention window)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
