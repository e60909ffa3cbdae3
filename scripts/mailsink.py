"""A local SMTP sink for development: every message is written to ``var/mail/*.eml`` and
summarised on stdout, so a person can read the mails eventshop sends without a mail server.
(With Docker, Mailpit plays this part; see compose.yaml.)"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import os
import signal
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{self.count:05d}.eml"
        (self.folder / name).write_bytes(envelope.content)
        print(
            f"mail to {', '.join(envelope.rcpt_tos)}: {message['Subject']!s}  "
            f"-> {self.folder / name}",
            flush=True,
        )
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("SMTP_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SMTP_PORT", "1025")))
    parser.add_argument(
        "--folder", default=os.path.join(os.environ.get("EVENTSHOP_VAR", "var"), "mail")
    )
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    controller = Controller(Sink(folder), hostname=args.host, port=args.port)
    controller.start()
    print(f"SMTP sink on {args.host}:{args.port}, writing to {folder}/", flush=True)
    stop = asyncio.Event()

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    asyncio.run(wait())
    controller.stop()


if __name__ == "__main__":
    main()
