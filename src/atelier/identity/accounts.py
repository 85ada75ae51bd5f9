"""Accounts: sign-up, sign-in, token refresh and sign-out."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.audit import service as audit
from atelier.core.clock import Clock
from atelier.core.context import RequestInfo
from atelier.core.db import transaction
from atelier.core.errors import Conflict, Forbidden, TooManyRequests, Unauthorized
from atelier.core.ids import new_id
from atelier.core.ratelimit import RateLimiter
from atelier.identity import invitations, passwords, tokens
from atelier.identity.models import Membership, Organization, RefreshToken, User
from atelier.plans import service as plans_service
from atelier.settings import AuthSettings

T = TypeVar("T")
LOGIN_FAILED = "Incorrect email or password"
# After the short lockout (settings), repeated failures lock an account for the day: backoff.
DAILY_FAILURES = "20/day"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    access_expires_at: datetime
    refresh_token: str


async def find_user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email.strip().lower()))


async def register(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    display_name: str,
    locale: str,
    invitation: str | None = None,
    auth: AuthSettings,
    info: RequestInfo,
    clock: Clock,
) -> User:
    """Self-service sign-up: open to anyone, or only with an invitation to this email address,
    depending on the server's registration mode. An invitation given is accepted at once."""
    if auth.registration == "closed":
        raise Forbidden("Sign-up is closed on this server; ask an administrator for an account")
    if auth.registration == "invite" and not invitation:
        raise Forbidden("Sign-up on this server needs an invitation")
    async with transaction(session):
        if invitation:
            pending = await invitations.find_valid(session, invitation, clock=clock)
            if pending.email != email.strip().lower():
                raise Forbidden("This invitation was sent to another email address")
        user = await create_user(
            session,
            email=email,
            password=password,
            display_name=display_name,
            locale=locale,
            auth=auth,
            info=info,
            clock=clock,
        )
        if invitation:
            await invitations.accept_as(session, user.id, invitation, info=info, clock=clock)
    return user


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    display_name: str,
    locale: str = "en",
    is_superadmin: bool = False,
    auth: AuthSettings,
    info: RequestInfo,
    clock: Clock,
) -> User:
    """Create an account and its personal organization, where the new user is owner."""
    email = email.strip().lower()
    passwords.check_strength(
        password,
        min_length=auth.password_min_length,
        min_score=auth.password_min_strength,
        user_inputs=[email, email.split("@")[0], display_name],
    )
    async with transaction(session):
        if await find_user_by_email(session, email) is not None:
            raise Conflict("An account with this email already exists", field="email")
        return await add_user(
            session,
            email=email,
            display_name=display_name,
            locale=locale,
            password_hash=passwords.hash_password(password),
            is_superadmin=is_superadmin,
            auth=auth,
            info=info,
            clock=clock,
            details={"superadmin": is_superadmin},
        )


async def add_user(
    session: AsyncSession,
    *,
    email: str,
    display_name: str,
    locale: str = "en",
    password_hash: str | None,
    is_superadmin: bool = False,
    auth: AuthSettings,
    info: RequestInfo,
    clock: Clock,
    details: dict,
) -> User:
    """Insert a user and their personal organization (owner) inside the caller's unit of work;
    409 if the email is taken, even by a concurrent sign-up."""
    user = User(
        email=email.strip().lower(),
        display_name=display_name,
        locale=locale,
        password_hash=password_hash,
        is_superadmin=is_superadmin,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:  # the same email registered concurrently
        raise Conflict("An account with this email already exists", field="email") from None
    org = await create_personal_org(session, user, auth=auth, clock=clock)
    await audit.record(
        session,
        "user.registered",
        info=info,
        org_id=org.id,
        user_id=user.id,
        target=("user", user.id),
        details=details,
    )
    return user


async def create_personal_org(
    session: AsyncSession, user: User, *, auth: AuthSettings, clock: Clock
) -> Organization:
    plan = await plans_service.get_plan(session, auth.default_plan)
    trial_ends = clock.now() + timedelta(days=plan.trial_days) if plan.trial_days else None
    org = Organization(
        name=f"{user.display_name}'s workspace"[:100],
        plan_id=plan.id,
        is_personal=True,
        trial_ends_at=trial_ends,
        created_by=user.id,
    )
    session.add(org)
    await session.flush()
    session.add(Membership(org_id=org.id, user_id=user.id, role="owner"))
    return org


async def sign_in(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    config: tokens.TokenConfig,
    limiter: RateLimiter,
    lockout: str,
    info: RequestInfo,
    clock: Clock,
) -> TokenPair:
    """Check the password and start a token family (API clients)."""

    async def start(user: User) -> TokenPair:
        return await issue_pair(
            session, user.id, family_id=new_id("fam"), config=config, clock=clock
        )

    return await authenticate(
        session,
        email=email,
        password=password,
        limiter=limiter,
        lockout=lockout,
        info=info,
        clock=clock,
        start=start,
    )


async def authenticate(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    limiter: RateLimiter,
    lockout: str,
    info: RequestInfo,
    clock: Clock,
    start: Callable[[User], Awaitable[T]],
) -> T:
    """Check the password, then `start(user)` (a token family, a web session) in the same unit
    of work. The error never says which part failed.

    Failed attempts are counted per account: past `lockout` (e.g. 5 in 15 minutes), and past
    20 in a day, the account refuses sign-ins (429) until the window passes, even with the
    right password, so guessing gets nowhere.
    """
    account = email.strip().lower()[:254]
    try:
        for limit in (lockout, DAILY_FAILURES):
            await limiter.check(limit, "sign-in-failures", account, what="failed sign-ins")
    except TooManyRequests:
        async with transaction(session):
            await audit.record(
                session,
                "auth.sign_in",
                outcome="failure",
                info=info,
                details={"email": account, "reason": "locked"},
            )
        raise
    started: T | None = None
    async with transaction(session):
        user = await find_user_by_email(session, email)
        matches, new_hash = passwords.verify(password, user.password_hash if user else None)
        if user is None or not matches or not user.is_active:
            await audit.record(
                session,
                "auth.sign_in",
                outcome="failure",
                info=info,
                user_id=user.id if user else None,
                details={
                    "email": account,
                    "reason": "inactive" if user and matches else "bad_credentials",
                },
            )
        else:
            if new_hash:  # stored with older Argon2 parameters
                user.password_hash = new_hash
            user.last_login_at = clock.now()
            started = await start(user)
            await audit.record(
                session, "auth.sign_in", info=info, user_id=user.id, target=("user", user.id)
            )
    if started is None:
        for limit in (lockout, DAILY_FAILURES):
            await limiter.hit(limit, "sign-in-failures", account)
        raise Unauthorized(LOGIN_FAILED)
    return started


async def refresh(
    session: AsyncSession,
    refresh_token: str,
    *,
    config: tokens.TokenConfig,
    info: RequestInfo,
    clock: Clock,
) -> TokenPair:
    """Trade a refresh token for a new pair. A token used twice revokes its whole family."""
    now = clock.now()
    async with transaction(session):
        row = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == tokens.hash_token(refresh_token))
        )
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            problem = "unknown" if row is None else "revoked or expired"
            pair = None
        else:
            # Conditional update: of two concurrent uses, exactly one wins.
            claimed = await session.execute(
                update(RefreshToken)
                .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
                .values(used_at=now)
            )
            if claimed.rowcount == 1:
                user = await session.get(User, row.user_id)
                if user is None or not user.is_active:
                    problem, pair = "inactive account", None
                else:
                    pair = await issue_pair(
                        session, row.user_id, family_id=row.family_id, config=config, clock=clock
                    )
            else:
                await _revoke_family(session, row.family_id, now=now)
                await audit.record(
                    session,
                    "auth.refresh_reuse",
                    outcome="failure",
                    info=info,
                    user_id=row.user_id,
                    target=("token_family", row.family_id),
                )
                problem, pair = "already used: every session of this sign-in is now ended", None
    if pair is None:
        raise Unauthorized(f"The refresh token is not valid ({problem})")
    return pair


async def sign_out(
    session: AsyncSession, refresh_token: str, *, info: RequestInfo, clock: Clock
) -> None:
    """End the sign-in the refresh token belongs to. Unknown tokens are ignored (idempotent)."""
    async with transaction(session):
        row = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == tokens.hash_token(refresh_token))
        )
        if row is not None:
            await _revoke_family(session, row.family_id, now=clock.now())
            await audit.record(
                session,
                "auth.sign_out",
                info=info,
                user_id=row.user_id,
                target=("token_family", row.family_id),
            )


async def issue_pair(
    session: AsyncSession,
    user_id: str,
    *,
    family_id: str,
    config: tokens.TokenConfig,
    clock: Clock,
) -> TokenPair:
    now = clock.now()
    access, expires = tokens.issue_access_token(
        config.keys[0],
        user_id=user_id,
        session_id=family_id,
        issuer=config.issuer,
        now=now,
        lifetime=config.access_lifetime,
    )
    refresh_token, token_hash = tokens.new_refresh_token()
    session.add(
        RefreshToken(
            user_id=user_id,
            family_id=family_id,
            token_hash=token_hash,
            created_at=now,
            expires_at=now + config.refresh_lifetime,
        )
    )
    return TokenPair(access, expires, refresh_token)


async def _revoke_family(session: AsyncSession, family_id: str, *, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
