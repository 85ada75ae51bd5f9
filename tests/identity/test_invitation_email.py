"""Invitations are emailed through a real SMTP conversation (aiosmtpd on loopback) once the
invitation is committed; without a mail server the message goes to the log."""

import asyncio
import email as email_parser
from email import policy as email_policy

import pytest
import structlog
from aiosmtpd.controller import Controller

from atelier.adapters.mail import SmtpMailer
from tests.conftest import free_port
from tests.identity.factories import unique_email


class Inbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def app(app, smtp_server):
    controller, _ = smtp_server
    app.state.mailer = SmtpMailer(
        host=controller.hostname,
        port=controller.port,
        sender="Atelier <noreply@atelier.test>",
        security="none",
    )
    return app


async def test_an_invitation_is_emailed_with_its_link(client, alice, smtp_server):
    _, inbox = smtp_server
    email = unique_email("invitee")
    response = await client.post(
        f"/api/v1/orgs/{alice.org_id}/invitations",
        json={"email": email, "role": "viewer"},
        headers=alice.headers,
    )
    assert response.status_code == 201
    link = response.json()["link"]
    for _ in range(50):  # delivered from a worker thread
        if inbox.messages:
            break
        await asyncio.sleep(0.05)
    [message] = inbox.messages
    assert message.rcpt_tos == [email]
    assert message.mail_from == "noreply@atelier.test"
    parsed = email_parser.message_from_bytes(message.content, policy=email_policy.default)
    assert parsed["Subject"] == "Invitation to join Alice's workspace on Atelier"
    body = parsed.get_content()
    assert link in body
    assert "as viewer" in body
    assert "Vous êtes invité" in body


async def test_a_refused_invitation_sends_nothing(client, alice, smtp_server):
    _, inbox = smtp_server
    response = await client.post(
        f"/api/v1/orgs/{alice.org_id}/invitations",
        json={"email": alice.user.email},
        headers=alice.headers,
    )
    assert response.status_code == 409  # already a member: rolled back, nothing sent
    await asyncio.sleep(0.2)
    assert inbox.messages == []


async def test_without_smtp_the_message_is_logged(make_settings):
    from atelier.app import create_app

    app = create_app(make_settings())
    with structlog.testing.capture_logs() as logs:
        await app.state.mailer.send(to="x@example.com", subject="Hello", text="Body")
    assert logs[0]["event"] == "mail_not_sent_no_smtp"
    assert logs[0]["to"] == "x@example.com"
    await app.state.engine.dispose()
