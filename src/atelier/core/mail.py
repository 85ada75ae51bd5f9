"""What a domain needs to send an email: one method, implemented in `adapters/mail`."""

from typing import Protocol


class Mailer(Protocol):
    async def send(self, *, to: str, subject: str, text: str) -> None: ...
