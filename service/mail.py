"""Outgoing mail: one small interface, an SMTP backend and a development backend.

``send(to, subject, body)`` delivers now and raises MailError on failure (the CLI, which
reports it). ``send_later`` hands the message to a background thread, so a page's answer
time does not depend on the mail server (a password-reset form must answer an unknown
address as fast as a known one). The ``dev`` backend, the default, writes each message to
the log and to ``instance/mail/`` as an .eml file: the service runs without a mail server.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Protocol

from flask import Flask
from flask import current_app

from service.config import Env
from service.config import Settings

log = logging.getLogger(__name__)

#: Seconds to wait for the SMTP server at each step.
SMTP_TIMEOUT = 10.0


class MailError(Exception):
    """A message could not be delivered; the message says why."""


class Backend(Protocol):
    """Delivers one message."""

    def deliver(self, message: EmailMessage) -> None: ...


class DevBackend:
    """Writes each message to the log and to a folder as ``<time>-<n>.eml``."""

    def __init__(self, folder: Path, *, log_body: bool = True) -> None:
        self.folder = folder
        #: Off in production: a body holds reset links, which log readers must not get.
        self.log_body = log_body
        self._count = 0
        self._lock = threading.Lock()

    def deliver(self, message: EmailMessage) -> None:
        with self._lock:
            self._count += 1
            name = f"{time.time_ns()}-{self._count:06d}.eml"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / name).write_bytes(message.as_bytes())
        except OSError as e:
            raise MailError(f"cannot write {self.folder / name}: {e.strerror}") from e
        log.info(
            "mail to %s: %s (written to %s)%s",
            message["To"],
            message["Subject"],
            self.folder / name,
            "\n" + message.get_content() if self.log_body else "",
        )


class SmtpBackend:
    """Sends through an SMTP server (standard library ``smtplib``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str = "",
        password: str = "",
        starttls: bool = False,
        timeout: float = SMTP_TIMEOUT,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls, self.timeout = starttls, timeout

    def deliver(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as e:
            raise MailError(f"SMTP {self.host}:{self.port}: {e}") from e


class Mailer:
    """Builds messages from the settings' sender and hands them to a backend."""

    def __init__(self, backend: Backend, sender: str) -> None:
        self.backend = backend
        self.sender = sender
        self._pending: list[threading.Thread] = []
        self._lock = threading.Lock()

    def message(self, to: str, subject: str, body: str) -> EmailMessage:
        """Return the message (headers refuse line breaks: no header injection)."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message.set_content(body)
        return message

    def send(self, to: str, subject: str, body: str) -> None:
        """Deliver now; MailError when it cannot be."""
        try:
            message = self.message(to, subject, body)
        except ValueError as e:  # a line break in a header
            raise MailError(f"refused message: {e}") from e
        self.backend.deliver(message)

    def send_later(self, to: str, subject: str, body: str) -> None:
        """Deliver in a background thread; a failure is logged."""

        def run() -> None:
            try:
                self.send(to, subject, body)
            except MailError as e:
                log.error("mail to %s not sent: %s", to, e)

        thread = threading.Thread(target=run, name="authz-mail", daemon=True)
        with self._lock:
            self._pending = [t for t in self._pending if t.is_alive()]
            self._pending.append(thread)
        thread.start()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait for messages handed to ``send_later`` (tests, and a clean stop)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._pending)
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))


def backend_for(settings: Settings) -> Backend:
    """The backend the settings choose."""
    if settings.mail_backend == "smtp":
        return SmtpBackend(
            settings.mail_host,
            settings.mail_port,
            username=settings.mail_username,
            password=settings.mail_password,
            starttls=settings.mail_starttls,
        )
    return DevBackend(
        Path(settings.instance_path) / "mail", log_body=settings.env is not Env.PRODUCTION
    )


def for_app(app: Flask) -> Mailer:
    """Return the app's mailer (``app.extensions["authz.mail"]``), made on first use."""
    found = app.extensions.get("authz.mail")
    if found is None:
        settings: Settings = app.config["AUTHZ"]
        found = app.extensions.setdefault(
            "authz.mail", Mailer(backend_for(settings), settings.mail_from)
        )
    return found  # type: ignore[no-any-return]


def mailer() -> Mailer:
    """Return the current app's mailer."""
    return for_app(current_app._get_current_object())  # type: ignore[attr-defined]


def send(to: str, subject: str, body: str) -> None:
    """Deliver a message now through the app's mailer; MailError when it cannot be."""
    mailer().send(to, subject, body)
