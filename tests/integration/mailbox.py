"""Read what the ``dev`` mail backend wrote (instance/mail/*.eml), as a user reads mail."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path

from flask import Flask

from service import mail

_LINK = re.compile(r"https?://\S+")


def messages(app: Flask) -> list[EmailMessage]:
    """Every message sent so far, oldest first (background sends waited for)."""
    mail.for_app(app).drain()
    folder = Path(app.config["AUTHZ"].instance_path) / "mail"
    found = []
    for path in sorted(folder.glob("*.eml")) if folder.exists() else []:
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        found.append(parsed)
    return found


def to(app: Flask, address: str) -> list[EmailMessage]:
    """The messages sent to ``address``, oldest first."""
    return [m for m in messages(app) if m["To"] == address]


def last_link(app: Flask, address: str) -> str:
    """The path of the link in the last message to ``address`` (e.g. ``/verify/...``)."""
    sent = to(app, address)
    assert sent, f"no mail to {address}"
    body = sent[-1].get_content()
    match = _LINK.search(body)
    assert match, body
    return "/" + match.group(0).split("/", 3)[3]
