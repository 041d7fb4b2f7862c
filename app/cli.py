"""The `mjq` command."""
from __future__ import annotations

import argparse
import sys

from app.cli_client import register as register_client_commands
from app.image_modes import IMAGE_MODES, RELAY
from config import ConfigError, MjqError, Settings, options


def _migrate(args: argparse.Namespace) -> int:
    from app.migrate import upgrade

    upgrade(Settings.from_env().effective_database_url)
    print("database is at the newest schema")
    return 0


def _seed(args: argparse.Namespace) -> int:
    from app.db import make_engine, make_session_factory
    from app.services.accounts import seed_simulator_accounts

    settings = Settings.from_env()
    with make_session_factory(make_engine(settings.effective_database_url))() as session:
        made = seed_simulator_accounts(session, args.count if args.count is not None else settings.sim_accounts)
    print(f"created {made} simulator accounts" if made else "accounts exist already; nothing seeded")
    return 0


def _run(args: argparse.Namespace) -> int:
    from app.devstack import run

    return run()


def _webhook_secret(args: argparse.Namespace) -> int:
    from app.db import make_engine, make_session_factory
    from workers.webhook_signing import stored_secret

    settings = Settings.from_env()
    if settings.webhook_secret:
        print(settings.webhook_secret)
        return 0
    with make_session_factory(make_engine(settings.effective_database_url))() as session:
        print(stored_secret(session))
    return 0


def _keys(args: argparse.Namespace) -> int:
    """`mjq keys create|list|update|revoke|credit`: the same service functions as the admin API."""
    from app.crypto import SecretBox
    from app.db import make_engine, make_session_factory
    from app.errors import ApiError
    from app.services import keys
    from app.services.plans import plans_from_json
    from workers.billing import credit

    settings = Settings.from_env()
    box = SecretBox.from_settings(settings)
    with make_session_factory(make_engine(settings.effective_database_url))() as session:
        try:
            if args.keys_command == "create":
                row, key = keys.create_key(session, args.name, args.plan or settings.default_plan, args.role,
                                           plans_from_json(settings.plans_json), args.balance, args.image_mode, box)
                print(f"id {row.id}  plan {row.plan}  role {row.role}  image mode {row.image_mode}\nkey {key}\n"
                      f"webhook secret {keys.webhook_secret(session, row.id, box)}\n"
                      "store the key now: it is not shown again (the key reads its webhook secret at "
                      "GET /mj/webhook-secret)")
            elif args.keys_command == "list":
                for row in keys.list_keys(session):
                    state = "revoked" if row.revoked_at else "active"
                    print(f"{row.id}  {row.prefix}…  {row.name:20}  {row.role:5}  {row.plan:8}  "
                          f"balance {row.balance if row.balance is not None else '-'}  images {row.image_mode:6}  "
                          f"{state}")
            elif args.keys_command == "update":
                row = keys.set_image_mode(session, args.id, args.image_mode)
                print(f"key {row.id} image mode {row.image_mode}")
            elif args.keys_command == "revoke":
                keys.revoke_key(session, args.id)
                print(f"key {args.id} revoked")
            else:
                print(f"key {args.id} balance {credit(session, args.id, args.amount, args.note)}")
        except ApiError as exc:
            print(f"mjq: {exc.description}", file=sys.stderr)
            return 2
        except MjqError as exc:  # a stored webhook secret MJQ_SECRET_KEY cannot open
            print(f"mjq: {exc}", file=sys.stderr)
            return 2
        except KeyError:
            print(f"mjq: key {args.id} not found", file=sys.stderr)
            return 2
    return 0


def _config(args: argparse.Namespace) -> int:
    for env, default, help_text in options():
        print(f"{env:36} {default:28} {help_text}")
    return 0


def _number(raw: str) -> int | str:
    """An int when `raw` is one, else `raw` as given, so the service's message names the field."""
    try:
        return int(raw, 10)
    except ValueError:
        return raw


#: CLI option (argparse dest) -> field of the account JSON, for the options that map one to one.
_ACCOUNT_OPTIONS = {"id": "id", "name": "name", "driver": "driver", "fast_concurrency": "fastConcurrency",
                    "relax_concurrency": "relaxConcurrency", "queue_size": "queueSize", "weight": "weight",
                    "remix": "remix", "timeout_minutes": "timeoutMinutes", "enable": "enable"}


def _account_body(args: argparse.Namespace) -> dict[str, object]:
    """The account JSON the given options describe (only those given), for the service the API uses too."""
    from app.errors import ValidationFailed

    body: dict[str, object] = {key: getattr(args, dest) for dest, key in _ACCOUNT_OPTIONS.items()
                               if getattr(args, dest, None) is not None}
    for dest, key in (("modes", "modes"), ("bot_types", "botTypes")):
        if getattr(args, dest, None) is not None:
            body[key] = [part.strip() for part in getattr(args, dest).split(",") if part.strip()]
    settings: dict[str, object] = {}
    for item in getattr(args, "setting", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationFailed(f"--setting {key or item!r} must be KEY=VALUE")
        # `-` reads the value from stdin: tokens stay out of the shell history and `ps`.
        settings[key] = sys.stdin.readline().rstrip("\n") if value == "-" else (value or None)
    if settings:
        body["settings"] = settings
    return body


def _accounts(args: argparse.Namespace) -> int:
    """`mjq accounts list|show|create|update|delete|enable|disable`: the admin API's service, on DATABASE_URL."""
    import json

    from app.crypto import SecretBox
    from app.db import make_engine, make_session_factory
    from app.services import account_admin
    from config import MjqError

    settings = Settings.from_env()
    box = SecretBox.from_settings(settings)
    command = args.accounts_command
    with make_session_factory(make_engine(settings.effective_database_url))() as session:
        try:
            if command == "list":
                rows, total = account_admin.list_accounts(session)
                for a in rows:
                    state = "enabled" if a.enable else f"disabled ({a.disabled_reason or 'no reason'})"
                    print(f"{a.id:24} {a.driver:9} {','.join(a.modes):16} fast {a.fast_concurrency:<3} "
                          f"relax {a.relax_concurrency:<3} queue {a.queue_size:<5} {state:10} {a.name}")
                print(f"{total} account{'s' if total != 1 else ''}")
                return 0
            if command == "delete":
                account_admin.delete_account(session, args.id)
                print(f"account {args.id} deleted")
                return 0
            if command == "show":
                account = account_admin.get_account(session, args.id)
            elif command == "create":
                account = account_admin.create_account(session, _account_body(args), box)
            elif command == "update":
                account = account_admin.update_account(session, args.account_id, _account_body(args), box)
            else:
                reason = getattr(args, "reason", None)
                account = account_admin.set_enabled(session, args.id, command == "enable", reason)
            print(json.dumps(account.to_json(), indent=2, ensure_ascii=False))
        except MjqError as exc:
            print(f"mjq: {exc}", file=sys.stderr)
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mjq", description="mjq: a distributed Midjourney job executor")
    sub = parser.add_subparsers(dest="command", required=True)
    register_client_commands(sub)  # imagine, action, fetch, describe, blend (app/cli_client.py)
    sub.add_parser("run", help="run the whole stack on embedded defaults (what `make run` does)").set_defaults(
        func=_run)
    sub.add_parser("migrate", help="bring the database to the newest schema").set_defaults(func=_migrate)
    seed = sub.add_parser("seed", help="create simulator accounts when there are none")
    seed.add_argument("--count", type=int, default=None, help="how many (default MJQ_SIM_ACCOUNTS)")
    seed.set_defaults(func=_seed)
    accounts_parser = sub.add_parser("accounts", help="upstream accounts: list, show, create, update, delete, "
                                     "enable, disable (the admin API's rules; secrets encrypted with MJQ_SECRET_KEY)")
    accounts_sub = accounts_parser.add_subparsers(dest="accounts_command", required=True)
    accounts_sub.add_parser("list", help="every account, one a line")
    verb_parsers = {verb: accounts_sub.add_parser(verb, help=what) for verb, what in (
        ("show", "an account as JSON (never its secrets)"), ("delete", "delete an account with no open task"),
        ("enable", "enable an account"), ("disable", "disable an account"))}
    for verb_parser in verb_parsers.values():
        verb_parser.add_argument("id")
    verb_parsers["disable"].add_argument("--reason", default=None, help="why (shown as disabledReason)")
    account_create = accounts_sub.add_parser("create", help="create an account")
    account_update = accounts_sub.add_parser("update", help="change the options given (settings merge key by key)")
    account_update.add_argument("account_id", metavar="ID")
    account_create.add_argument("--id", default=None, help="[A-Za-z0-9_-]{1,64}; default <driver>-<random hex>")
    for account_parser, required in ((account_create, True), (account_update, False)):
        account_parser.add_argument("--name", required=required)
        account_parser.add_argument("--driver", required=required, help="simulator, mjproxy or discord")
        account_parser.add_argument("--setting", action="append", metavar="KEY=VALUE",
                                    help="a driver setting (mjproxy: baseUrl, secret; discord: guildId, channelId, "
                                         "userToken, userAgent); VALUE - reads it from stdin; empty VALUE removes it")
        account_parser.add_argument("--modes", default=None, help="comma list of FAST, TURBO, RELAX")
        account_parser.add_argument("--bot-types", default=None, help="comma list of MID_JOURNEY, NIJI_JOURNEY")
        for flag, limits in (("--fast-concurrency", "1..100"), ("--relax-concurrency", "0..100"),
                             ("--queue-size", "0..10000"), ("--weight", "0..1000"), ("--timeout-minutes", "1..120")):
            account_parser.add_argument(flag, type=_number, default=None, help=limits)
        account_parser.add_argument("--remix", action=argparse.BooleanOptionalAction, default=None)
        account_parser.add_argument("--enable", action=argparse.BooleanOptionalAction, default=None)
    accounts_parser.set_defaults(func=_accounts)
    keys_parser = sub.add_parser("keys", help="API keys: create, list, update, revoke, credit")
    keys_sub = keys_parser.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--plan", default=None, help="plan name (default MJQ_DEFAULT_PLAN)")
    create.add_argument("--role", default="user", choices=("user", "admin"))
    create.add_argument("--balance", type=int, default=None, help="tokens; omit for an unmetered key")
    create.add_argument("--image-mode", default=RELAY, choices=IMAGE_MODES,
                        help="image URLs the key is shown on the plain /mj mounts (default relay)")
    keys_sub.add_parser("list", help="every key (never the key itself)")
    update = keys_sub.add_parser("update", help="change a key's image mode")
    update.add_argument("id")
    update.add_argument("--image-mode", required=True, choices=IMAGE_MODES)
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("id")
    credit_parser = keys_sub.add_parser("credit", help="add tokens to a key's balance")
    credit_parser.add_argument("id")
    credit_parser.add_argument("amount", type=int)
    credit_parser.add_argument("--note", default=None)
    keys_parser.set_defaults(func=_keys)
    sub.add_parser("config", help="list every setting with its default").set_defaults(func=_config)
    sub.add_parser("webhook-secret", help="print the whsec_ secret webhooks are signed with (MJQ_WEBHOOK_SECRET, "
                   "else the one kept in the database, created on first use)").set_defaults(func=_webhook_secret)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"mjq: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
