"""Invitations: an admin invites an email address with a role; whoever signs in with that
address and holds the link joins the organization. Links expire and work once.

The link is emailed through the configured mailer once the invitation is committed (SMTP, or
the log when no mail server is set), and is also given back to the inviter.
"""

import secrets
from datetime import timedelta
from functools import partial

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.audit import service as audit
from atelier.core.clock import Clock
from atelier.core.context import RequestInfo
from atelier.core.db import on_commit, transaction
from atelier.core.errors import Conflict, Forbidden, NotFound
from atelier.core.mail import Mailer
from atelier.core.principal import Principal, Role
from atelier.core.tenancy import get_owned, org_select
from atelier.identity import orgs
from atelier.identity.models import Invitation, Membership, Organization, User
from atelier.identity.tokens import hash_token

log = structlog.get_logger(__name__)
TOKEN_PREFIX = "invite_"  # noqa: S105 - a prefix, not a secret


class InvitationExpired(Conflict):
    slug, title = "invitation-expired", "Invitation expired"


def _invitation_text(org_name: str, role: str, link: str, valid_for: timedelta) -> str:
    return (
        f"You are invited to join {org_name} on Atelier as {role}.\n\n"
        f"Open this link to accept (it works once, for {valid_for.days} days):\n{link}\n\n"
        "Vous êtes invité à rejoindre cette organisation sur Atelier : ouvrez le lien ci-dessus.\n"
    )


def link_for(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/invitations/{token}"


async def invite(
    session: AsyncSession,
    principal: Principal,
    *,
    email: str,
    role: Role,
    valid_for: timedelta,
    base_url: str,
    mailer: Mailer,
    info: RequestInfo,
    clock: Clock,
) -> tuple[Invitation, str]:
    """The invitation and its link, emailed once the invitation is committed. A newer
    invitation replaces a pending one."""
    principal.require_role("admin")
    orgs.require_may_grant(principal, role)
    email = email.strip().lower()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = clock.now()
    async with transaction(session):
        member = await session.scalar(
            select(Membership)
            .join(User, User.id == Membership.user_id)
            .where(Membership.org_id == principal.org_id, User.email == email)
        )
        if member is not None:
            raise Conflict(f"{email} is already a member of this organization")
        for pending in await session.scalars(
            org_select(Invitation, principal).where(
                Invitation.email == email,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
            )
        ):
            pending.revoked_at = now
        invitation = Invitation(
            org_id=principal.org_id,
            email=email,
            role=role,
            token_hash=hash_token(token),
            invited_by=principal.user_id,
            created_at=now,
            expires_at=now + valid_for,
        )
        session.add(invitation)
        await session.flush()
        await audit.record(
            session,
            "invitation.created",
            info=info,
            principal=principal,
            target=("invitation", invitation.id),
            details={"email": email, "role": role},
        )
        org = await session.get(Organization, principal.org_id)
        link = link_for(base_url, token)
        on_commit(
            session,
            partial(
                mailer.send,
                to=email,
                subject=f"Invitation to join {org.name if org else 'an organization'} on Atelier",
                text=_invitation_text(org.name if org else "", role, link, valid_for),
            ),
        )
    log.info("invitation_link", org_id=principal.org_id, email=email, link=link)
    return invitation, link


async def list_pending(session: AsyncSession, principal: Principal, *, clock: Clock):
    principal.require_role("admin")
    rows = await session.scalars(
        org_select(Invitation, principal)
        .where(
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > clock.now(),
        )
        .order_by(Invitation.created_at.desc(), Invitation.id)
    )
    return list(rows)


async def revoke(
    session: AsyncSession,
    principal: Principal,
    invitation_id: str,
    *,
    info: RequestInfo,
    clock: Clock,
) -> None:
    principal.require_role("admin")
    async with transaction(session):
        invitation = await get_owned(
            session, Invitation, principal, invitation_id, what="invitation"
        )
        if invitation.accepted_at is None and invitation.revoked_at is None:
            invitation.revoked_at = clock.now()
            await audit.record(
                session,
                "invitation.revoked",
                info=info,
                principal=principal,
                target=("invitation", invitation.id),
            )


async def find_valid(session: AsyncSession, token: str, *, clock: Clock) -> Invitation:
    """The pending invitation behind a link: NotFound if unknown, used or revoked; expired
    ones say so."""
    invitation = await session.scalar(
        select(Invitation).where(Invitation.token_hash == hash_token(token))
    )
    if invitation is None or invitation.accepted_at or invitation.revoked_at:
        raise NotFound("This invitation link is not valid (unknown, already used or withdrawn)")
    if invitation.expires_at <= clock.now():
        raise InvitationExpired("This invitation has expired: ask for a new one")
    return invitation


async def describe(session: AsyncSession, token: str, *, clock: Clock) -> tuple[Invitation, str]:
    """A valid invitation and the name of its organization, for the page behind the link."""
    invitation = await find_valid(session, token, clock=clock)
    org = await session.get(Organization, invitation.org_id)
    return invitation, org.name if org else ""


async def accept(
    session: AsyncSession, principal: Principal, token: str, *, info: RequestInfo, clock: Clock
) -> Membership:
    """The signed-in user joins, if the invitation was sent to their email address."""
    if principal.user_id is None:
        raise Forbidden("Invitations are accepted by people, not by API keys")
    return await accept_as(session, principal.user_id, token, info=info, clock=clock)


async def accept_as(
    session: AsyncSession, user_id: str, token: str, *, info: RequestInfo, clock: Clock
) -> Membership:
    async with transaction(session):
        invitation = await find_valid(session, token, clock=clock)
        user = await session.get(User, user_id)
        if user is None or user.email != invitation.email:
            await audit.record(
                session,
                "invitation.accepted",
                outcome="failure",
                info=info,
                org_id=invitation.org_id,
                user_id=user_id,
                target=("invitation", invitation.id),
                details={"reason": "other_email"},
            )
            failed = True
        else:
            failed = False
            membership = await orgs.join_org(
                session,
                invitation.org_id,
                user.id,
                invitation.role,  # type: ignore[arg-type]
            )
            invitation.accepted_at = clock.now()
            invitation.accepted_by = user.id
            await audit.record(
                session,
                "invitation.accepted",
                info=info,
                org_id=invitation.org_id,
                user_id=user.id,
                target=("invitation", invitation.id),
            )
            await audit.record(
                session,
                "member.added",
                info=info,
                org_id=invitation.org_id,
                user_id=user.id,
                target=("user", user.id),
                details={"role": invitation.role, "invitation": invitation.id},
            )
    if failed:
        raise Forbidden("This invitation was sent to another email address")
    return membership
