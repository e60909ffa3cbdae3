"""The one place the notifier is wired: store, templates, SMTP relay, subscriptions."""

from __future__ import annotations

from typing import cast

from events.runtime import Runtime
from notifier.config import Settings
from notifier.handlers import SUBSCRIPTIONS, Context
from notifier.mailer import Composer, SmtpMailer
from notifier.store import NotifierStore


async def bootstrap(runtime: Runtime) -> None:
    settings = cast(Settings, runtime.settings)
    store = NotifierStore(runtime.mongo, settings.database_name, source="/notifier")
    await store.setup()
    mailer = SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        starttls=settings.smtp_starttls,
        tls=settings.smtp_tls,
        timeout=settings.smtp_timeout,
        max_connections=settings.prefetch,
    )
    runtime.on_stop(mailer.close)
    context = Context(
        store=store,
        composer=Composer(settings.smtp_from),
        mailer=mailer,
        lease_seconds=settings.send_lease_seconds,
    )
    runtime.subscribe(SUBSCRIPTIONS, context)
