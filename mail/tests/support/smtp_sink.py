#!/usr/bin/python3
"""An SMTP server for the delivery tests: aiosmtpd, a real and independent
implementation, standing for a recipient's mail exchanger or a smarthost.

Listens on 127.0.0.1:<port>, optionally with STARTTLS and AUTH, and stores
each message it accepts as a file in <dir>:

    FROM <reverse path, <> for the null one>
    OPT <each MAIL FROM parameter>
    RCPT <each accepted recipient>
    TLS yes|no
    AUTH <user>|-
    <empty line>
    <the message bytes, dot-unstuffed, as received>

written under a temporary name and renamed, so a reader never sees half a
file. Recipients starting with a --reject prefix are refused with 550, with
a --defer prefix with 451; --data-reply answers the end of DATA with the
given reply instead of storing. Prints READY once it accepts connections.
"""

import argparse
import itertools
import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, args):
        self.args = args
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        for prefix in self.args.reject:
            if address.startswith(prefix):
                return "550 5.1.1 no such user here"
        for prefix in self.args.defer:
            if address.startswith(prefix):
                return "451 4.2.0 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.args.data_reply:
            return self.args.data_reply
        n = next(self.counter)
        login = session.login_data.decode() if session.authenticated and session.login_data else "-"
        head = [f"FROM {envelope.mail_from}"]
        head += [f"OPT {o}" for o in envelope.mail_options]
        head += [f"RCPT {r}" for r in envelope.rcpt_tos]
        head += [f"TLS {'yes' if session.ssl is not None else 'no'}", f"AUTH {login}", ""]
        body = envelope.original_content
        tmp = os.path.join(self.args.dir, f".{n}.tmp")
        with open(tmp, "wb") as f:
            f.write(("\n".join(head) + "\n").encode())
            f.write(body)
        os.rename(tmp, os.path.join(self.args.dir, f"{n:06}.msg"))
        return f"250 2.0.0 queued as {n}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--auth-user")
    p.add_argument("--auth-password")
    p.add_argument("--auth-clear", action="store_true", help="offer AUTH without TLS")
    p.add_argument("--login-only", action="store_true", help="offer AUTH LOGIN, not PLAIN")
    p.add_argument("--reject", action="append", default=[])
    p.add_argument("--defer", action="append", default=[])
    p.add_argument("--data-reply")
    p.add_argument("--size-limit", type=int, default=33554432)
    args = p.parse_args()

    kwargs = {
        "data_size_limit": args.size_limit,
        "server_hostname": "sink.test",
        "enable_SMTPUTF8": True,
    }
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        kwargs["tls_context"] = context
    if args.auth_user:
        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == args.auth_user.encode()
                and auth_data.password == args.auth_password.encode()
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        kwargs["authenticator"] = authenticator
        kwargs["auth_require_tls"] = not args.auth_clear
        if args.login_only:
            kwargs["auth_exclude_mechanism"] = ["PLAIN"]

    controller = Controller(Sink(args), hostname="127.0.0.1", port=args.port, **kwargs)
    controller.start()
    print("READY", flush=True)
    try:
        threading.Event().wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
