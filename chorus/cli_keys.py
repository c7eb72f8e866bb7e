"""``chorus keys create | list | revoke``: API keys in the configured store (the server's database)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from chorus.config import Settings
from chorus.errors import ChorusError, NotFoundError


def add_arguments(keys: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]) -> None:
    sub = keys.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="a new key for a tenant (created if new); printed once, as the last line")
    create.add_argument("--tenant", required=True, help="tenant id: 1-64 of [A-Za-z0-9_-]")
    create.add_argument("--role", choices=["admin", "user"], default="user")
    create.add_argument("--max-concurrency", type=int, help="requests in flight at once with this key (per replica)")
    sub.add_parser("list", help="every key: id, tenant, role, limit, created, revoked (never the secret)")
    revoke = sub.add_parser("revoke", help="revoke a key: refused from the next request on")
    revoke.add_argument("id", help="the key's id (key_...)")
    for p in sub.choices.values():
        p.add_argument("--config", "-c", help="YAML config file (CHORUS_* env vars override it)")
        p.set_defaults(func=run)


def run_keys(args: argparse.Namespace, settings: Settings) -> int:
    from chorus.store.audit import AuditLog
    from chorus.store.keys import KeyStore
    from chorus.store.settings import open_store

    sql, _ = open_store(settings.store, settings.data_dir)
    try:
        keys = KeyStore(sql)
        if args.keys_command == "create":
            try:
                key, record = keys.create(args.tenant, role=args.role, max_concurrency=args.max_concurrency)
            except ValueError as e:
                raise ChorusError(str(e)) from e
            detail = {"role": record.role, "max_concurrency": record.max_concurrency}
            AuditLog(sql).append(
                "key.create", tenant_id=record.tenant_id, key_id=None, subject=record.id, detail=detail
            )
            limit = record.max_concurrency or "none"
            print(f"created {record.id} for tenant {record.tenant_id} (role {record.role}, max concurrency {limit})")
            print("the key is shown only this once; store it now:")
            print(key)
        elif args.keys_command == "list":
            print("id\ttenant\trole\tmax_concurrency\tcreated\trevoked")
            for r in keys.list():
                revoked = r.revoked_at.isoformat(timespec="seconds") if r.revoked_at else "-"
                created = r.created_at.isoformat(timespec="seconds")
                print(f"{r.id}\t{r.tenant_id}\t{r.role}\t{r.max_concurrency or '-'}\t{created}\t{revoked}")
        else:
            gone = keys.revoke(args.id)
            if gone is None:
                raise NotFoundError(f"no key {args.id!r}")
            AuditLog(sql).append("key.revoke", tenant_id=gone.tenant_id, subject=args.id)
            print(f"revoked {args.id}")
    finally:
        sql.close()
    return 0
