"""Single sign-on, end to end against a real OpenID provider (npm `oidc-provider` on loopback):
each test drives its login pages, then hands the redirect to `finish_login`."""

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from atelier.core.clock import FixedClock
from atelier.core.errors import Forbidden, ServiceUnavailable, Unauthorized
from atelier.identity.oidc import (
    MAX_LOGIN_AGE,
    OidcClient,
    PendingLogin,
    ProviderMetadata,
    finish_login,
    start_login,
    validate_id_token,
)
from atelier.settings import OidcProviderSettings
from tests.conftest import free_port
from tests.identity.oidc_fixtures import REDIRECT_URI, OidcTestProvider

# A provider that need not exist, for what can be checked without the one on loopback.
ISSUER = "https://idp.example"
NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
NONCE = "n-0S6_WzA2Mj"
IDP = OidcProviderSettings(
    name="idp",
    display_name="IdP",
    discovery_url=f"{ISSUER}/.well-known/openid-configuration",
    client_id="atelier",
)
METADATA = ProviderMetadata(
    issuer=ISSUER,
    authorization_endpoint=f"{ISSUER}/authorize",
    token_endpoint=f"{ISSUER}/token",
    jwks_uri=f"{ISSUER}/jwks",
    userinfo_endpoint=f"{ISSUER}/userinfo",
    token_auth_methods=("client_secret_basic",),
    signing_algorithms=("RS256",),
    iss_parameter_supported=True,
)


@pytest.fixture
async def oidc_client() -> AsyncIterator[OidcClient]:
    async with httpx.AsyncClient() as http:
        yield OidcClient(http)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime.now(UTC))


async def sign_in(
    idp: OidcTestProvider, login: str, client: OidcClient, clock: FixedClock, **overrides
):
    """Start a sign-in and go through the provider's pages: (settings, pending, callback params)."""
    provider = idp.settings(**overrides)
    url, pending = await start_login(
        provider, redirect_uri=idp.redirect_uri, client=client, clock=clock
    )
    return provider, pending, await idp.log_in(url, login)


def assert_refused(excinfo: pytest.ExceptionInfo, reason: str) -> None:
    assert excinfo.value.extra["reason"] == reason, excinfo.value.detail


async def test_sign_in_returns_the_verified_identity_with_groups(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock
) -> None:
    provider, pending, params = await sign_in(oidc_provider, "alice", oidc_client, clock)
    assert params["iss"] == oidc_provider.issuer  # RFC 9207

    # The caller keeps the pending login in the session cookie, as JSON.
    stored = PendingLogin.from_dict(json.loads(json.dumps(pending.to_dict())))
    assert stored == pending
    identity = await finish_login(provider, stored, params=params, client=oidc_client, clock=clock)

    assert identity.provider == "local-idp"
    assert identity.issuer == oidc_provider.issuer
    assert identity.subject == "alice"
    assert identity.email == "alice@example.com"
    assert identity.email_verified is True
    assert identity.name == "Alice Martin"
    assert identity.groups == ["atelier-admins", "staff"]


async def test_authorization_url_carries_state_nonce_and_an_s256_challenge(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock
) -> None:
    url, pending = await start_login(
        oidc_provider.settings(),
        redirect_uri=oidc_provider.redirect_uri,
        client=oidc_client,
        clock=clock,
    )
    query = httpx.URL(url).params
    assert url.startswith(f"{oidc_provider.issuer}/auth?")
    assert query["response_type"] == "code"
    assert query["scope"] == "openid email profile groups"
    assert query["state"] == pending.state
    assert query["nonce"] == pending.nonce
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == create_s256_code_challenge(pending.code_verifier)
    assert pending.created_at == clock.now()
    _, other = await start_login(
        oidc_provider.settings(),
        redirect_uri=oidc_provider.redirect_uri,
        client=oidc_client,
        clock=clock,
    )
    assert {other.state, other.nonce, other.code_verifier}.isdisjoint(
        {pending.state, pending.nonce, pending.code_verifier}
    )


async def test_client_secret_post_is_used_when_it_is_all_the_provider_takes(
    oidc_provider_post: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock
) -> None:
    provider, pending, params = await sign_in(oidc_provider_post, "alice", oidc_client, clock)
    identity = await finish_login(provider, pending, params=params, client=oidc_client, clock=clock)
    assert identity.subject == "alice"


@pytest.mark.parametrize("state", ["forged", None])
async def test_callback_for_another_state_is_refused(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock, state: str | None
) -> None:
    provider, pending, params = await sign_in(oidc_provider, "alice", oidc_client, clock)
    params.pop("state")
    if state is not None:
        params["state"] = state
    with pytest.raises(Unauthorized) as excinfo:
        await finish_login(provider, pending, params=params, client=oidc_client, clock=clock)
    assert_refused(excinfo, "state-mismatch")


async def test_code_cannot_be_redeemed_twice(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock
) -> None:
    provider, pending, params = await sign_in(oidc_provider, "alice", oidc_client, clock)
    await finish_login(provider, pending, params=params, client=oidc_client, clock=clock)
    with pytest.raises(Unauthorized) as excinfo:
        await finish_login(provider, pending, params=params, client=oidc_client, clock=clock)
    assert_refused(excinfo, "code-rejected")
    assert excinfo.value.extra["provider_error"] == "invalid_grant"


async def test_forged_code_is_refused(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock
) -> None:
    provider, pending, params = await sign_in(oidc_provider, "alice", oidc_client, clock)
    with pytest.raises(Unauthorized) as excinfo:
        await finish_login(
            provider,
            pending,
            params={**params, "code": generate_token(43)},
            client=oidc_client,
            clock=clock,
        )
    assert_refused(excinfo, "code-rejected")
    assert excinfo.value.extra["provider_error"] == "invalid_grant"


async def test_wrong_code_verifier_is_refused_by_the_provider(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock
) -> None:
    provider, pending, params = await sign_in(oidc_provider, "alice", oidc_client, clock)
    stolen = dataclasses.replace(pending, code_verifier=generate_token(64))
    with pytest.raises(Unauthorized) as excinfo:
        await finish_login(provider, stolen, params=params, client=oidc_client, clock=clock)
    assert_refused(excinfo, "code-rejected")
    assert excinfo.value.extra["provider_error"] == "invalid_grant"


async def test_id_token_for_another_nonce_is_refused(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock
) -> None:
    provider, pending, params = await sign_in(oidc_provider, "alice", oidc_client, clock)
    tampered = dataclasses.replace(pending, nonce=generate_token(43))
    with pytest.raises(Unauthorized) as excinfo:
        await finish_login(provider, tampered, params=params, client=oidc_client, clock=clock)
    assert_refused(excinfo, "nonce-mismatch")


@pytest.mark.parametrize(
    ("elapsed", "expired"),
    [(MAX_LOGIN_AGE - timedelta(seconds=1), False), (MAX_LOGIN_AGE + timedelta(seconds=1), True)],
)
async def test_sign_in_older_than_ten_minutes_is_refused(
    oidc_provider: OidcTestProvider,
    oidc_client: OidcClient,
    clock: FixedClock,
    elapsed: timedelta,
    expired: bool,
) -> None:
    provider, pending, params = await sign_in(oidc_provider, "alice", oidc_client, clock)
    clock.advance(elapsed)
    if not expired:
        await finish_login(provider, pending, params=params, client=oidc_client, clock=clock)
        return
    with pytest.raises(Unauthorized) as excinfo:
        await finish_login(provider, pending, params=params, client=oidc_client, clock=clock)
    assert_refused(excinfo, "login-expired")


@pytest.mark.parametrize("iss", ["http://127.0.0.1:1", None])
async def test_response_naming_another_issuer_is_refused(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock, iss: str | None
) -> None:
    # The provider advertises RFC 9207 support, so a response without `iss` is refused too.
    provider, pending, params = await sign_in(oidc_provider, "alice", oidc_client, clock)
    params.pop("iss")
    if iss is not None:
        params["iss"] = iss
    with pytest.raises(Unauthorized) as excinfo:
        await finish_login(provider, pending, params=params, client=oidc_client, clock=clock)
    assert_refused(excinfo, "issuer-mismatch")


async def test_error_from_the_provider_is_refused(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock
) -> None:
    # prompt=none with no session at the provider: it redirects back with login_required.
    provider = oidc_provider.settings()
    url, pending = await start_login(
        provider, redirect_uri=oidc_provider.redirect_uri, client=oidc_client, clock=clock
    )
    params = await oidc_provider.log_in(f"{url}&prompt=none", "alice")
    assert params["error"] == "login_required"
    with pytest.raises(Unauthorized) as excinfo:
        await finish_login(provider, pending, params=params, client=oidc_client, clock=clock)
    assert_refused(excinfo, "provider-error")
    assert excinfo.value.extra["provider_error"] == "login_required"


@pytest.mark.parametrize(
    ("login", "allowed", "reason"),
    [
        ("bob", ["example.com"], "domain-not-allowed"),
        # Exact domains: no subdomains, no suffixes, no parents.
        ("dave", ["example.com"], "domain-not-allowed"),
        ("bob", ["example"], "domain-not-allowed"),
        ("alice", ["mail.example.com"], "domain-not-allowed"),
        ("carol", [], "email-unverified"),
        ("carol", ["example.com"], "email-unverified"),
    ],
)
async def test_email_outside_allowed_domains_or_unverified_is_forbidden(
    oidc_provider: OidcTestProvider,
    oidc_client: OidcClient,
    clock: FixedClock,
    login: str,
    allowed: list[str],
    reason: str,
) -> None:
    provider, pending, params = await sign_in(
        oidc_provider, login, oidc_client, clock, allowed_domains=allowed
    )
    with pytest.raises(Forbidden) as excinfo:
        await finish_login(provider, pending, params=params, client=oidc_client, clock=clock)
    assert_refused(excinfo, reason)


@pytest.mark.parametrize(
    ("login", "allowed"),
    [("alice", ["other.example", "Example.COM"]), ("dave", ["mail.example.com"])],
)
async def test_allowed_domains_ignore_case(
    oidc_provider: OidcTestProvider,
    oidc_client: OidcClient,
    clock: FixedClock,
    login: str,
    allowed: list[str],
) -> None:
    provider, pending, params = await sign_in(
        oidc_provider, login, oidc_client, clock, allowed_domains=allowed
    )
    identity = await finish_login(provider, pending, params=params, client=oidc_client, clock=clock)
    assert identity.subject == login


@pytest.mark.parametrize(("login", "groups_claim"), [("alice", None), ("dave", "groups")])
async def test_groups_are_empty_without_a_claim_to_read(
    oidc_provider: OidcTestProvider,
    oidc_client: OidcClient,
    clock: FixedClock,
    login: str,
    groups_claim: str | None,
) -> None:
    provider, pending, params = await sign_in(
        oidc_provider, login, oidc_client, clock, groups_claim=groups_claim
    )
    identity = await finish_login(provider, pending, params=params, client=oidc_client, clock=clock)
    assert identity.groups == []


async def test_only_asymmetric_algorithms_the_provider_advertises_are_accepted(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient
) -> None:
    # The provider lists HS256 too: with it, a token "signed" with a public key could pass.
    metadata = await oidc_client.metadata(oidc_provider.settings())
    assert set(metadata.signing_algorithms) == {"RS256", "PS256", "ES256"}


async def test_unreachable_provider_is_service_unavailable(
    oidc_client: OidcClient, clock: FixedClock
) -> None:
    port = free_port()  # nothing listens there
    provider = IDP.model_copy(
        update={"discovery_url": f"http://127.0.0.1:{port}/.well-known/openid-configuration"}
    )
    with pytest.raises(ServiceUnavailable) as excinfo:
        await start_login(provider, redirect_uri=REDIRECT_URI, client=oidc_client, clock=clock)
    assert excinfo.value.detail == (
        "The sign-in provider IdP could not be reached (discovery); try again later."
    )


async def test_discovery_document_of_another_issuer_is_refused(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock
) -> None:
    # Discovery 1.0 §4.3: the document must name the issuer its URL was derived from.
    provider = oidc_provider.settings(discovery_url=f"{oidc_provider.discovery_url}?tenant=other")
    with pytest.raises(ServiceUnavailable) as excinfo:
        await start_login(
            provider, redirect_uri=oidc_provider.redirect_uri, client=oidc_client, clock=clock
        )
    assert f"for issuer '{oidc_provider.issuer}'" in excinfo.value.detail


async def test_provider_that_does_not_answer_times_out(clock: FixedClock) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        provider = IDP.model_copy(
            update={"discovery_url": f"http://127.0.0.1:{port}/.well-known/openid-configuration"}
        )
        # No timeout on the httpx client itself: the one OidcClient sets is what must fire.
        async with httpx.AsyncClient(timeout=None) as http, asyncio.timeout(5):
            impatient = OidcClient(http, timeout_s=0.2)
            with pytest.raises(ServiceUnavailable) as excinfo:
                await start_login(
                    provider, redirect_uri=REDIRECT_URI, client=impatient, clock=clock
                )
    assert "did not answer (discovery) in time" in excinfo.value.detail


async def test_pending_login_of_another_provider_is_refused(
    oidc_provider: OidcTestProvider, oidc_client: OidcClient, clock: FixedClock
) -> None:
    provider, pending, params = await sign_in(oidc_provider, "alice", oidc_client, clock)
    elsewhere = dataclasses.replace(pending, provider="another-idp")
    with pytest.raises(Unauthorized) as excinfo:
        await finish_login(provider, elsewhere, params=params, client=oidc_client, clock=clock)
    assert_refused(excinfo, "wrong-provider")


@pytest.mark.parametrize(
    "data",
    [{}, {"state": "x"}, {"provider": 1}, "not a dict"],
)
def test_unreadable_pending_login_is_unauthorized(data) -> None:
    with pytest.raises(Unauthorized) as excinfo:
        PendingLogin.from_dict(data)
    assert_refused(excinfo, "no-pending-login")


def test_pending_login_needs_an_aware_created_at() -> None:
    data = {
        "provider": "p",
        "state": "s",
        "nonce": "n",
        "code_verifier": "v",
        "redirect_uri": "http://x/cb",
        "created_at": "2026-11-01T10:00:00",
    }
    with pytest.raises(Unauthorized):
        PendingLogin.from_dict(data)


# ---- ID token validation, on tokens minted here (the provider only makes valid ones) ----------


@pytest.fixture(scope="module")
def signing_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "key-1"})


@pytest.fixture(scope="module")
def published(signing_key: RSAKey) -> KeySet:
    return KeySet.import_key_set({"keys": [signing_key.as_dict(private=False)]})


def id_token(key: RSAKey, alg: str = "RS256", **changes) -> str:
    claims = {
        "iss": ISSUER,
        "sub": "248289761001",
        "aud": "atelier",
        "exp": int(NOW.timestamp()) + 600,
        "iat": int(NOW.timestamp()),
        "nonce": NONCE,
    }
    claims.update(changes)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def validate(token: str, keys: KeySet) -> dict:
    return validate_id_token(IDP, METADATA, token, keys=keys, nonce=NONCE, now=NOW)


def test_valid_id_token_gives_its_claims(signing_key: RSAKey, published: KeySet) -> None:
    assert validate(id_token(signing_key), published)["sub"] == "248289761001"
    many = id_token(signing_key, aud=["atelier", "other"], azp="atelier")
    assert validate(many, published)["azp"] == "atelier"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "https://evil.example"}, "invalid-id-token"),
        ({"iss": None}, "invalid-id-token"),
        ({"aud": "someone-else"}, "invalid-id-token"),
        ({"aud": ["someone-else", "other"]}, "invalid-id-token"),
        ({"aud": ["atelier", "other"]}, "invalid-id-token"),  # several audiences need azp
        ({"azp": "someone-else"}, "invalid-id-token"),
        ({"exp": int(NOW.timestamp()) - 61}, "invalid-id-token"),  # past the minute of leeway
        ({"exp": None}, "invalid-id-token"),
        ({"iat": int(NOW.timestamp()) + 120}, "invalid-id-token"),
        ({"iat": None}, "invalid-id-token"),
        ({"sub": None}, "invalid-id-token"),
        ({"nonce": "another"}, "nonce-mismatch"),
        ({"nonce": None}, "nonce-mismatch"),
    ],
)
def test_id_token_with_wrong_claims_is_refused(
    signing_key: RSAKey, published: KeySet, changes: dict, reason: str
) -> None:
    with pytest.raises(Unauthorized) as excinfo:
        validate(id_token(signing_key, **changes), published)
    assert_refused(excinfo, reason)


def test_id_token_signed_by_another_key_is_refused(published: KeySet) -> None:
    impostor = RSAKey.generate_key(2048, parameters={"kid": "key-1"})
    with pytest.raises(Unauthorized) as excinfo:
        validate(id_token(impostor), published)
    assert_refused(excinfo, "invalid-id-token")


def test_id_token_with_an_algorithm_the_provider_does_not_advertise_is_refused(
    signing_key: RSAKey, published: KeySet
) -> None:
    with pytest.raises(Unauthorized) as excinfo:
        validate(id_token(signing_key, alg="PS256"), published)
    assert_refused(excinfo, "invalid-id-token")


def test_unsigned_or_hmac_id_tokens_are_refused(signing_key: RSAKey, published: KeySet) -> None:
    claims = b64(
        json.dumps(
            {
                "iss": ISSUER,
                "sub": "x",
                "aud": "atelier",
                "nonce": NONCE,
                "exp": int(NOW.timestamp()) + 600,
                "iat": int(NOW.timestamp()),
            }
        ).encode()
    )
    none_header = b64(json.dumps({"alg": "none"}).encode())
    unsigned = f"{none_header}.{claims}."
    # Key confusion: HMAC keyed with the public key anyone can download.
    header = b64(json.dumps({"alg": "HS256", "kid": "key-1"}).encode())
    public_pem = signing_key.as_pem(private=False)
    mac = hmac.new(public_pem, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    confused = f"{header}.{claims}.{b64(mac)}"
    hs_metadata = dataclasses.replace(METADATA, signing_algorithms=("RS256", "HS256", "none"))
    for token in (unsigned, confused):
        for metadata in (METADATA, hs_metadata):
            with pytest.raises(Unauthorized) as excinfo:
                validate_id_token(IDP, metadata, token, keys=published, nonce=NONCE, now=NOW)
            assert_refused(excinfo, "invalid-id-token")
        # With nothing asymmetric left, joserfc would fall back on its defaults (HS256 among them).
        hs_only = dataclasses.replace(METADATA, signing_algorithms=("HS256", "none"))
        with pytest.raises(ServiceUnavailable):
            validate_id_token(IDP, hs_only, token, keys=published, nonce=NONCE, now=NOW)
