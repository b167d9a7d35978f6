"""The mail backends: SMTP against a real (tiny) SMTP server, and the development folder."""

from __future__ import annotations

import email
import email.policy
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.mail import DevBackend
from service.mail import Mailer
from service.mail import MailError
from service.mail import SmtpBackend


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) to receive messages: EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        server: SmtpServer = self.server  # type: ignore[assignment]
        self.reply("220 test ESMTP")
        envelope: dict[str, object] = {"rcpt": []}
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250-test")
                self.reply("250 AUTH PLAIN")
            elif verb == "HELO":
                self.reply("250 test")
            elif verb == "AUTH":
                server.logins.append(line)
                self.reply("235 ok")
            elif verb == "MAIL":
                envelope = {"from": line, "rcpt": []}
                self.reply("250 ok")
            elif verb == "RCPT":
                envelope["rcpt"].append(line)  # type: ignore[union-attr]
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                body = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    body += chunk[1:] if chunk.startswith(b"..") else chunk
                server.received.append(body)
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.received: list[bytes] = []
        self.logins: list[str] = []


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_smtp_backend_delivers_to_a_real_server(smtp_server: SmtpServer) -> None:
    port = smtp_server.server_address[1]
    mailer = Mailer(SmtpBackend("127.0.0.1", port, username="me", password="pw"), "authz@x.test")
    mailer.send("dana@example.com", "Verify your email address", "Open https://x.test/verify/t\n")
    assert len(smtp_server.received) == 1
    message = email.message_from_bytes(smtp_server.received[0], policy=email.policy.default)
    assert message["To"] == "dana@example.com"
    assert message["From"] == "authz@x.test"
    assert message["Subject"] == "Verify your email address"
    assert "https://x.test/verify/t" in message.get_content()  # type: ignore[attr-defined]
    assert smtp_server.logins and smtp_server.logins[0].startswith("AUTH PLAIN")


def test_smtp_backend_reports_an_unreachable_server() -> None:
    server = SmtpServer()
    port = server.server_address[1]
    server.server_close()  # nothing listens there any more
    mailer = Mailer(SmtpBackend("127.0.0.1", port, timeout=2), "authz@x.test")
    with pytest.raises(MailError, match=f"127.0.0.1:{port}"):
        mailer.send("dana@example.com", "Hi", "body")


def test_send_later_logs_a_failure_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    server = SmtpServer()
    port = server.server_address[1]
    server.server_close()
    mailer = Mailer(SmtpBackend("127.0.0.1", port, timeout=2), "authz@x.test")
    mailer.send_later("dana@example.com", "Hi", "body")
    mailer.drain()
    assert "not sent" in caplog.text


def test_a_header_injection_is_refused(smtp_server: SmtpServer) -> None:
    port = smtp_server.server_address[1]
    mailer = Mailer(SmtpBackend("127.0.0.1", port), "authz@x.test")
    with pytest.raises(MailError):
        mailer.send("dana@example.com\r\nBcc: eve@example.com", "Hi", "body")
    assert smtp_server.received == []


def test_dev_backend_writes_eml_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    mailer = Mailer(DevBackend(tmp_path / "mail"), "authz@localhost")
    mailer.send("dana@example.com", "Reset your password", "the link\n")
    files = list((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 1
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Reset your password"
    assert "the link" in caplog.text


def test_dev_backend_keeps_bodies_out_of_the_log_when_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    mailer = Mailer(DevBackend(tmp_path / "mail", log_body=False), "authz@localhost")
    mailer.send("dana@example.com", "Reset your password", "secret-link\n")
    assert "Reset your password" in caplog.text
    assert "secret-link" not in caplog.text
