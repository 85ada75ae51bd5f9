"""Email delivery: SMTP when configured, else the log (embedded mode)."""

from atelier.adapters.mail.log import LogMailer
from atelier.adapters.mail.smtp import SmtpMailer

__all__ = ["LogMailer", "SmtpMailer"]
