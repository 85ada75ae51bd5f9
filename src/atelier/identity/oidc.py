"""OpenID Connect sign-in, the protocol half: the authorization code flow with PKCE (S256),
`state`, `nonce` and ID token validation, against providers found by discovery.

`start_login` returns the provider's authorization URL and a `PendingLogin` the caller keeps in
the browser's session; `finish_login` checks the callback against it, redeems the code and returns
the verified `OidcIdentity`. No HTTP framework and no database here: the routes, the session and
just-in-time accounts belong to the caller. Every refusal is an `AtelierError` whose `reason`
member names the check that failed (`state-mismatch`, `nonce-mismatch`, `login-expired`, ...), so
the web UI can explain it without parsing `detail`.
"""

import hmac
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from atelier.core.clock import Clock
from atelier.core.errors import AtelierError, Forbidden, ServiceUnavailable, Unauthorized
from atelier.settings import OidcProviderSettings

log = structlog.get_logger(__name__)

MAX_LOGIN_AGE = timedelta(minutes=10)
HTTP_TIMEOUT_S = 10.0
METADATA_TTL_S = 3600.0
CLOCK_LEEWAY_S = 60
# Only signatures made with a private key. `none` proves nothing, and HS* would be checked with
# the client secret (or, in a key-confusion attack, with a public key anyone can fetch).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
     "Ed25519"}
)  # fmt: skip
DISCOVERY_SUFFIX = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class PendingLogin:
    """A sign-in sent to the provider and not yet back; the caller keeps it in the browser's
    session (signed, never in a URL) and hands it to `finish_login` once."""

    provider: str
    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    created_at: datetime

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "created_at": self.created_at.isoformat()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PendingLogin":
        """Rebuild one from `to_dict`'s output; anything else is `Unauthorized`."""
        try:
            values = {f.name: data[f.name] for f in fields(cls)}
            if not all(isinstance(value, str) and value for value in values.values()):
                raise TypeError("every field is a non-empty string")
            created_at = datetime.fromisoformat(values.pop("created_at"))
            if created_at.tzinfo is None:
                raise ValueError("created_at has no time zone")
        except (KeyError, TypeError, ValueError):
            raise Unauthorized(
                "No single sign-on in progress in this browser: start again.",
                reason="no-pending-login",
            ) from None
        return cls(created_at=created_at, **values)


@dataclass(frozen=True)
class OidcIdentity:
    """Who the provider says signed in. `(issuer, subject)` is the stable key of the person;
    `email` is verified and inside `allowed_domains`, but may change at the provider."""

    provider: str
    issuer: str
    subject: str
    email: str
    email_verified: bool
    name: str | None
    groups: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProviderMetadata:
    """What Atelier uses of a discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    token_auth_methods: tuple[str, ...]
    signing_algorithms: tuple[str, ...]
    iss_parameter_supported: bool


class OidcClient:
    """Talks to providers over one `httpx.AsyncClient`, built once per process, and caches each
    provider's discovery document (an hour) and key set (until an unknown key id shows up)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        timeout_s: float = HTTP_TIMEOUT_S,
        metadata_ttl_s: float = METADATA_TTL_S,
    ) -> None:
        self.http = http
        self.timeout = httpx.Timeout(timeout_s)
        self.metadata_ttl_s = metadata_ttl_s
        self._metadata: dict[str, tuple[float, ProviderMetadata]] = {}
        self._keys: dict[str, KeySet] = {}

    async def metadata(self, provider: OidcProviderSettings) -> ProviderMetadata:
        cached = self._metadata.get(provider.discovery_url)
        if cached and time.monotonic() - cached[0] < self.metadata_ttl_s:
            return cached[1]
        response = await self.request(provider, "GET", provider.discovery_url, what="discovery")
        metadata = _parse_metadata(provider, _json_object(provider, response, what="discovery"))
        self._metadata[provider.discovery_url] = (time.monotonic(), metadata)
        return metadata

    async def keys(
        self, provider: OidcProviderSettings, metadata: ProviderMetadata, *, refresh: bool = False
    ) -> KeySet:
        keys = self._keys.get(metadata.jwks_uri)
        if keys is None or refresh:
            response = await self.request(provider, "GET", metadata.jwks_uri, what="key set")
            try:
                keys = KeySet.import_key_set(_json_object(provider, response, what="key set"))
            except (JoseError, KeyError, TypeError, ValueError):
                raise _unavailable(provider, "published a key set Atelier cannot read") from None
            self._keys[metadata.jwks_uri] = keys
        return keys

    async def request(
        self, provider: OidcProviderSettings, method: str, url: str, *, what: str, **kwargs: Any
    ) -> httpx.Response:
        """One call to the provider; a network failure or timeout is `ServiceUnavailable`."""
        try:
            return await self.http.request(method, url, timeout=self.timeout, **kwargs)
        except httpx.TimeoutException:
            log.warning("oidc.provider_timeout", provider=provider.name, url=url)
            raise _unavailable(provider, f"did not answer ({what}) in time") from None
        except httpx.TransportError as exc:
            log.warning(
                "oidc.provider_unreachable", provider=provider.name, url=url, error=repr(exc)
            )
            raise _unavailable(provider, f"could not be reached ({what})") from None


async def start_login(
    provider: OidcProviderSettings, *, redirect_uri: str, client: OidcClient, clock: Clock
) -> tuple[str, PendingLogin]:
    """The URL to send the browser to, and the `PendingLogin` to keep in its session."""
    metadata = await client.metadata(provider)
    pending = PendingLogin(
        provider=provider.name,
        state=generate_token(43),
        nonce=generate_token(43),
        code_verifier=generate_token(64),  # RFC 7636: 43 to 128 unreserved characters
        redirect_uri=redirect_uri,
        created_at=clock.now(),
    )
    scopes = provider.scopes if "openid" in provider.scopes else ["openid", *provider.scopes]
    url = httpx.URL(metadata.authorization_endpoint).copy_merge_params(
        {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": create_s256_code_challenge(pending.code_verifier),
            "code_challenge_method": "S256",
        }
    )
    return str(url), pending


async def finish_login(
    provider: OidcProviderSettings,
    pending: PendingLogin,
    *,
    params: Mapping[str, str],
    client: OidcClient,
    clock: Clock,
) -> OidcIdentity:
    """Check the provider's redirect (`params`: its query string) against `pending`, redeem the
    code and return the verified identity. Call it at most once per `PendingLogin`."""
    if pending.provider != provider.name:
        raise _refused(provider, "this sign-in was started with another provider", "wrong-provider")
    if clock.now() - pending.created_at > MAX_LOGIN_AGE:
        raise _refused(provider, "the sign-in took more than 10 minutes", "login-expired")
    if not _same_secret(params.get("state"), pending.state):
        raise _refused(
            provider, "the response does not belong to this browser's sign-in", "state-mismatch"
        )
    metadata = await client.metadata(provider)
    # RFC 9207: a response from another provider (mix-up attack) names that one.
    iss = params.get("iss")
    if iss != metadata.issuer and (iss is not None or metadata.iss_parameter_supported):
        raise _refused(provider, "the response comes from another issuer", "issuer-mismatch")
    if "error" in params:
        error = params["error"][:64]
        description = params.get("error_description", "")[:200]
        raise _refused(
            provider,
            f"the provider answered {error}" + (f" ({description})" if description else ""),
            "provider-error",
            provider_error=error,
        )
    code = params.get("code")
    if not code:
        raise _refused(provider, "the response carries no authorization code", "missing-code")

    tokens = await _redeem_code(provider, metadata, pending, code=code, client=client)
    claims = await _id_token_claims(
        provider, metadata, tokens["id_token"], nonce=pending.nonce, client=client, clock=clock
    )
    if metadata.userinfo_endpoint:
        userinfo = await _userinfo(
            provider, metadata.userinfo_endpoint, tokens["access_token"], client=client
        )
        if userinfo.get("sub") != claims["sub"]:
            raise _refused(provider, "userinfo describes another subject", "subject-mismatch")
        claims = {**claims, **userinfo}
    return _identity(provider, metadata, claims)


# ---- the steps ---------------------------------------------------------------------------------


def _parse_metadata(provider: OidcProviderSettings, doc: dict[str, Any]) -> ProviderMetadata:
    required = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
    missing = [name for name in required if not isinstance(doc.get(name), str)]
    if missing:
        raise _unavailable(provider, f"published a discovery document without {', '.join(missing)}")
    # OpenID Connect Discovery 1.0 §4.3: the issuer is the discovery URL without the suffix.
    expected_issuer = provider.discovery_url.removesuffix(DISCOVERY_SUFFIX)
    if doc["issuer"].rstrip("/") != expected_issuer.rstrip("/"):
        raise _unavailable(
            provider,
            f"published a discovery document for issuer {doc['issuer']!r}, not {expected_issuer!r}",
        )
    algorithms = tuple(
        alg
        for alg in doc.get("id_token_signing_alg_values_supported", ["RS256"])
        if alg in ASYMMETRIC_ALGORITHMS
    )
    if not algorithms:
        raise _unavailable(provider, "signs ID tokens with no algorithm Atelier accepts")
    userinfo = doc.get("userinfo_endpoint")
    return ProviderMetadata(
        issuer=doc["issuer"],
        authorization_endpoint=doc["authorization_endpoint"],
        token_endpoint=doc["token_endpoint"],
        jwks_uri=doc["jwks_uri"],
        userinfo_endpoint=userinfo if isinstance(userinfo, str) else None,
        # RFC 8414: client_secret_basic when the provider does not say.
        token_auth_methods=tuple(
            doc.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
        ),
        signing_algorithms=algorithms,
        iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported") is True,
    )


async def _redeem_code(
    provider: OidcProviderSettings,
    metadata: ProviderMetadata,
    pending: PendingLogin,
    *,
    code: str,
    client: OidcClient,
) -> dict[str, Any]:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": pending.redirect_uri,
        "code_verifier": pending.code_verifier,
    }
    auth: httpx.BasicAuth | None = None
    secret = provider.client_secret.get_secret_value() if provider.client_secret else None
    if secret is None:  # a public client: PKCE is its only proof
        data["client_id"] = provider.client_id
    elif "client_secret_basic" in metadata.token_auth_methods:
        # RFC 6749 §2.3.1: both parts are form-encoded before they are joined.
        auth = httpx.BasicAuth(quote(provider.client_id, safe=""), quote(secret, safe=""))
    elif "client_secret_post" in metadata.token_auth_methods:
        data.update(client_id=provider.client_id, client_secret=secret)
    else:
        raise _unavailable(provider, "accepts neither client_secret_basic nor client_secret_post")

    response = await client.request(
        provider,
        "POST",
        metadata.token_endpoint,
        what="token",
        data=data,
        auth=auth,
        headers={"Accept": "application/json"},
    )
    if response.status_code in (400, 401):
        error = _oauth_error(response)
        if error in ("invalid_client", "unauthorized_client"):
            log.error("oidc.client_rejected", provider=provider.name, error=error)
            raise _unavailable(provider, f"refused Atelier's client credentials ({error})")
        log.info("oidc.code_rejected", provider=provider.name, error=error)
        why = f"the provider refused the code ({error})"
        raise _refused(provider, why, "code-rejected", provider_error=error)
    tokens = _json_object(provider, response, what="token")
    if not isinstance(tokens.get("id_token"), str) or not isinstance(
        tokens.get("access_token"), str
    ):
        raise _unavailable(provider, "answered the token request without an ID token")
    if str(tokens.get("token_type", "")).lower() != "bearer":
        raise _unavailable(provider, "issued a token type Atelier cannot use")
    return tokens


async def _id_token_claims(
    provider: OidcProviderSettings,
    metadata: ProviderMetadata,
    id_token: str,
    *,
    nonce: str,
    client: OidcClient,
    clock: Clock,
) -> dict[str, Any]:
    keys = await client.keys(provider, metadata)
    kid = _key_id(id_token)
    if kid is not None and kid not in {key.kid for key in keys}:
        keys = await client.keys(provider, metadata, refresh=True)  # rotated since we fetched
    return validate_id_token(provider, metadata, id_token, keys=keys, nonce=nonce, now=clock.now())


def validate_id_token(
    provider: OidcProviderSettings,
    metadata: ProviderMetadata,
    id_token: str,
    *,
    keys: KeySet,
    nonce: str,
    now: datetime,
) -> dict[str, Any]:
    """The claims of `id_token` once its signature (by a key of `keys`, with an asymmetric
    algorithm the provider advertises), issuer, audience, `azp`, times and nonce check out."""
    # Filtered again here, whatever built `metadata`: joserfc accepts `none` when it is listed,
    # and an empty list means its defaults (HS256 among them).
    algorithms = [alg for alg in metadata.signing_algorithms if alg in ASYMMETRIC_ALGORITHMS]
    if not algorithms:
        raise _unavailable(provider, "signs ID tokens with no algorithm Atelier accepts")
    try:
        token = jwt.decode(id_token, keys, algorithms=algorithms)
        jwt.JWTClaimsRegistry(
            now=int(now.timestamp()),
            leeway=CLOCK_LEEWAY_S,
            iss={"essential": True, "value": metadata.issuer},
            aud={"essential": True, "value": provider.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
        ).validate(token.claims)
    except (JoseError, ValueError) as exc:
        log.info("oidc.id_token_invalid", provider=provider.name, error=repr(exc))
        raise _refused(provider, f"its ID token is not valid ({exc})", "invalid-id-token") from None
    claims = token.claims
    # Core §3.1.3.7: with several audiences, `azp` must be present; when present, it names us.
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if ("azp" in claims or len(audiences) > 1) and claims.get("azp") != provider.client_id:
        raise _refused(provider, "its ID token was issued to another client", "invalid-id-token")
    if not _same_secret(claims.get("nonce"), nonce):
        raise _refused(provider, "its ID token answers another sign-in", "nonce-mismatch")
    return claims


async def _userinfo(
    provider: OidcProviderSettings, endpoint: str, access_token: str, *, client: OidcClient
) -> dict[str, Any]:
    response = await client.request(
        provider,
        "GET",
        endpoint,
        what="userinfo",
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    if response.status_code in (401, 403):
        raise _refused(provider, "userinfo refused the access token", "userinfo-refused")
    return _json_object(provider, response, what="userinfo")


def _identity(
    provider: OidcProviderSettings, metadata: ProviderMetadata, claims: dict[str, Any]
) -> OidcIdentity:
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise Forbidden(
            f"{provider.display_name} did not share an email address.",
            provider=provider.name,
            reason="email-missing",
        )
    # Some providers (Cognito) send the boolean as a string.
    verified = claims.get("email_verified") in (True, "true", "True")
    if not verified:
        raise Forbidden(
            f"{provider.display_name} has not verified {email}.",
            provider=provider.name,
            reason="email-unverified",
        )
    domain = email.rpartition("@")[2].lower()
    allowed = {d.lower().lstrip("@") for d in provider.allowed_domains}
    if allowed and domain not in allowed:
        raise Forbidden(
            f"Addresses at {domain} may not sign in with {provider.display_name}.",
            provider=provider.name,
            reason="domain-not-allowed",
        )
    name = claims.get("name")
    return OidcIdentity(
        provider=provider.name,
        issuer=metadata.issuer,
        subject=claims["sub"],
        email=email,
        email_verified=verified,
        name=name if isinstance(name, str) and name else None,
        groups=_groups(claims.get(provider.groups_claim)) if provider.groups_claim else [],
    )


# ---- small pieces ------------------------------------------------------------------------------


def _groups(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [group for group in value if isinstance(group, str)]
    return []


def _same_secret(received: object, expected: str) -> bool:
    return isinstance(received, str) and hmac.compare_digest(received.encode(), expected.encode())


def _key_id(id_token: str) -> str | None:
    try:
        kid = jws.extract_compact(id_token.encode()).headers().get("kid")
    except (JoseError, ValueError):
        return None
    return kid if isinstance(kid, str) else None


def _json_object(
    provider: OidcProviderSettings, response: httpx.Response, *, what: str
) -> dict[str, Any]:
    if response.status_code != 200:
        raise _unavailable(provider, f"answered {response.status_code} ({what})")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _unavailable(provider, f"answered something other than a JSON object ({what})")
    return body


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    return str(error)[:64] if error else f"HTTP {response.status_code}"


def _refused(provider: OidcProviderSettings, why: str, reason: str, **extra: Any) -> AtelierError:
    return Unauthorized(
        f"Sign-in with {provider.display_name} failed: {why}. Start again.",
        provider=provider.name,
        reason=reason,
        **extra,
    )


def _unavailable(provider: OidcProviderSettings, what: str) -> AtelierError:
    return ServiceUnavailable(
        f"The sign-in provider {provider.display_name} {what}; try again later.",
        provider=provider.name,
    )
