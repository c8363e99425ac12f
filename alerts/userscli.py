"""``smartpark users add | passwd | remove | list | token``: the console's users in ``<state dir>/users.yaml``.

Passwords are read from the terminal (twice) or, with ``--password-stdin``, from the first line of standard
input (for scripts and the demo). The running engine picks the change up on its next request.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from smartpark.config import Settings
from smartpark.errors import UsageError

from .users import ROLES, UserStore


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("users", help="console users and roles (viewer < operator < supervisor < admin)")
    s = p.add_subparsers(dest="users_cmd", metavar="ACTION")
    s.required = True
    add = s.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(func=cmd_add)
    pw = s.add_parser("passwd", help="set a user's password")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    pw.set_defaults(func=cmd_passwd)
    rm = s.add_parser("remove", help="remove a user (its sessions and tokens stop working)")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_remove)
    ls = s.add_parser("list", help="users and roles")
    ls.set_defaults(func=cmd_list)
    tok = s.add_parser("token", help="issue a personal API token acting as the user (printed once)")
    tok.add_argument("name")
    tok.set_defaults(func=cmd_token)


def store(settings: Settings) -> UserStore:
    return UserStore(settings.state_path / "users.yaml")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the passwords differ")
    return first


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    st = store(settings)
    st.add(args.name, args.role, _password(args))
    print(f"user {args.name} added as {args.role} in {st.path}")
    return 0


def cmd_passwd(args: argparse.Namespace, settings: Settings) -> int:
    st = store(settings)
    st.get(args.name)
    st.passwd(args.name, _password(args))
    print(f"password of {args.name} changed")
    return 0


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    store(settings).remove(args.name)
    print(f"user {args.name} removed")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    for user in store(settings).users.values():
        print(f"{user.name}\t{user.role}\t{len(user.tokens)} token(s)")
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    print(store(settings).issue_token(args.name))
    return 0
