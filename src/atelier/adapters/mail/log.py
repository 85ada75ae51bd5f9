"""A mailer for servers without SMTP: the message goes to the log (and the UI shows links)."""

import structlog

log = structlog.get_logger(__name__)


class LogMailer:
    async def send(self, *, to: str, subject: str, text: str) -> None:
        log.info("mail_not_sent_no_smtp", to=to, subject=subject, text=text)
