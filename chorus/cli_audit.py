"""``chorus audit verify | export | purge``: the hash-chained audit trail in the configured database."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from chorus.config import Settings


def add_arguments(audit: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]) -> None:
    sub = audit.add_subparsers(dest="audit_command", required=True)
    sub.add_parser("verify", help="check the whole chain; exit 1 and name the first bad row if anything was changed")
    export = sub.add_parser("export", help="one tenant's rows as JSON lines")
    export.add_argument("--tenant", required=True)
    export.add_argument("-o", "--output", help="file to write (default: stdout)")
    purge = sub.add_parser("purge", help="delete rows older than the retention now (the server does it daily)")
    purge.add_argument("--days", type=float, help="default: safety.audit_retention_days")
    for p in sub.choices.values():
        p.add_argument("--config", "-c", help="YAML config file (CHORUS_* env vars override it)")
        p.set_defaults(func=run)


def run_audit(args: argparse.Namespace, settings: Settings) -> int:
    from chorus.store.audit import AuditLog
    from chorus.store.settings import open_store

    sql, _ = open_store(settings.store, settings.data_dir)
    try:
        audit = AuditLog(sql)
        if args.audit_command == "verify":
            result = audit.verify()
            if not result.ok:
                print(f"audit chain BROKEN at row {result.first_bad_seq}: {result.problem}", file=sys.stderr)
                return 1
            print(f"audit chain ok: {result.rows} rows, head {result.head}")
        elif args.audit_command == "export":
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(Path(args.output).open("w")) if args.output else sys.stdout
                for row in audit.rows(args.tenant):
                    out.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
        else:
            days = args.days if args.days is not None else settings.safety.audit_retention_days
            print(f"purged {audit.purge(timedelta(days=days))} rows older than {days:g} days")
    finally:
        sql.close()
    return 0
