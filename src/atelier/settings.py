"""All of Atelier's configuration: one `Settings` object built from `ATELIER_*` variables or `.env`.

Entry points (the CLI, `create_app`, workers) build it once and pass down what each part needs.
Nested sections use a double underscore: `ATELIER_DATABASE__URL`, `ATELIER_HTTP__CORS_ORIGINS`.

Two profiles:
- `embedded` (default): SQLite and blobs under `./var/`, a local job executor, readable console
  logs, and a secret key generated once and kept in `var/secret.key`.
- `production`: every secret must be given, strong and not a known default, or Settings refuses
  to build with one line per problem.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from limits import parse as parse_limit
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "ATELIER_"
MIN_SECRET_LENGTH = 32
LANGUAGES = ("en", "fr")

# Values seen as defaults in tutorials, compose files and charts. Compared case-insensitively.
KNOWN_DEFAULT_SECRETS = frozenset(
    {
        "admin",
        "atelier",
        "change-me",
        "change_me",
        "changeit",
        "changeme",
        "changethis",
        "default",
        "dev",
        "example",
        "minioadmin",
        "password",
        "please-change-me",
        "s3cr3t",
        "secret",
        "secret-key",
        "secret_key",
        "supersecret",
        "test",
        "your-secret-key",
    }
)


def _split_list(value: Any) -> Any:
    """Accept `a,b,c` in the environment as well as a JSON list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]


class DatabaseSettings(BaseModel):
    """Where the data lives. SQLite for a laptop, PostgreSQL at scale."""

    url: str = Field(
        default="sqlite+aiosqlite:///var/atelier.db",
        description="SQLAlchemy URL; `sqlite:///` and `postgresql://` get their async driver. "
        "Unset: `atelier.db` in the data folder.",
    )
    echo: bool = Field(default=False, description="Log every SQL statement (debugging only).")
    pool_size: int = Field(default=5, ge=1, description="Connections kept open (PostgreSQL).")
    pool_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a free connection."
    )
    connect_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait when opening a connection."
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="FULL",
        description="SQLite `synchronous` pragma. FULL keeps acknowledged writes through an OS "
        "crash or power loss; NORMAL is faster and covers application crashes only.",
    )

    @field_validator("url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        for plain, driver in (
            ("sqlite://", "sqlite+aiosqlite://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


class StorageSettings(BaseModel):
    """Where uploaded and generated files live."""

    backend: Literal["local", "s3"] = Field(
        default="local",
        description="`local`: a folder on this machine; `s3`: any S3-compatible store (AWS S3, "
        "MinIO, Ceph, R2...).",
    )
    root: Path = Field(
        default=Path("var/blobs"),
        description="Folder of the local blob store. Unset: `blobs` in the data folder.",
    )
    s3_bucket: str | None = Field(default=None, description="Bucket (required with `s3`).")
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 API address, e.g. `http://minio:9000`; unset: AWS S3 of the region.",
    )
    s3_region: str = Field(default="us-east-1", description="Region of the bucket.")
    s3_access_key_id: str | None = Field(
        default=None, description="Access key; unset: boto3's usual chain (env, profile, role)."
    )
    s3_secret_access_key: SecretStr | None = Field(default=None, description="Secret key.")
    s3_path_style: bool = Field(
        default=False, description="Path-style addressing (`endpoint/bucket/key`), for MinIO."
    )
    s3_prefix: str = Field(
        default="", description="Prefix put before every key, to share a bucket (e.g. `atelier/`)."
    )
    s3_storage_class: str | None = Field(
        default=None,
        description="Storage class of new objects (e.g. `STANDARD_IA`); unset: default.",
    )
    s3_multipart_threshold_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="Objects larger than this are sent in parts of this size (5 MiB at least).",
    )

    gc_interval_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often the garbage collector looks for objects without a row.",
    )
    gc_grace_seconds: float = Field(
        default=86400.0,
        ge=60,
        description="How long an object must have been without a row before it is deleted "
        "(uploads in flight and crashed ones look alike until then).",
    )

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> StorageSettings:
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError("ATELIER_STORAGE__S3_BUCKET is required when the backend is s3")
        return self


class JobsSettings(BaseModel):
    """How background work runs: the executor, its workers, and the safety nets."""

    executor: Literal["inline", "local", "celery"] = Field(
        default="local",
        description="`local`: a process pool inside `atelier up`; `celery`: `atelier worker` "
        "processes fed through a broker; `inline`: in the submitting process (tests).",
    )
    concurrency: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Jobs run at once by the local pool (one process each).",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker (`redis://...` or `amqp://...`). Unset: `redis_url`.",
    )
    publish_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How long handing a job to the broker may take; a job not handed over is "
        "kept and dispatched again by the sweeper.",
    )
    dispatch_window: int = Field(
        default=32,
        ge=1,
        description="Jobs per queue handed to the executor but not started yet, in the "
        "`default` and `media` queues. Small keeps dispatch fair between organizations (a new "
        "job waits behind these at most); larger lets a busy queue release jobs in fewer, "
        "larger batches.",
    )
    dispatch_window_heavy: int = Field(
        default=4,
        ge=1,
        description="The same, in the `ml` and `gpu` queues, whose jobs run for minutes: a "
        "job handed over there can wait behind that many others' minutes.",
    )
    heartbeat_seconds: float = Field(
        default=2.0, gt=0, description="How often a running job reports it is alive."
    )
    stale_after_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A running job silent this long is taken as lost and queued again "
        "(counting an attempt).",
    )
    redispatch_after_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A dispatched job not started after this long is handed to the executor "
        "again (a message lost by the broker).",
    )
    sweep_seconds: float = Field(
        default=5.0, gt=0, description="How often the sweeper looks for lost or waiting jobs."
    )
    time_limit_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        description="After its time limit, how long a job may take to stop before its worker "
        "process is ended.",
    )
    event_poll_seconds: float = Field(
        default=0.5, gt=0, description="How often a job's event stream looks for changes."
    )
    modules: CommaList = Field(
        default_factory=list,
        description="Extra Python modules that register job kinds (comma-separated), imported "
        "by every process.",
    )

    _split = field_validator("modules", mode="before")(_split_list)


def _rate_limit(value: str) -> str:
    try:
        parse_limit(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit such as '5/minute' or '20/day'") from None
    return value


RateLimitText = Annotated[str, AfterValidator(_rate_limit)]


class DatasetsSettings(BaseModel):
    """What an uploaded table may hold, and how much of it is profiled."""

    max_rows: int = Field(
        default=10_000_000, ge=1, description="Rows a dataset version may have (more: 422)."
    )
    max_columns: int = Field(
        default=2_000, ge=1, description="Columns a dataset version may have (more: 422)."
    )
    max_xlsx_uncompressed_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1024 * 1024,
        description="What the parts of an .xlsx file may expand to (a zip bomb is refused "
        "before anything is decompressed).",
    )
    profile_sample_rows: int = Field(
        default=100_000,
        ge=1_000,
        description="Larger tables have their distributions profiled on a random sample of "
        "this many rows; counts (missing, distinct, min, max) stay exact.",
    )


class AutomlSettings(BaseModel):
    """AutoML runs: how long a search may take."""

    max_budget_seconds: int = Field(
        default=3600, ge=10, description="The longest time budget a run may ask for."
    )
    default_budget_seconds: int = Field(
        default=60, ge=10, description="The time budget of a run that names none."
    )


class RegistrySettings(BaseModel):
    """The model registry (an uploaded model may be as large as `http.max_upload_bytes`)."""

    onnx_export: bool = Field(
        default=True,
        description="Export each AutoML model version to ONNX where it converts (a few "
        "seconds per version).",
    )


class HttpSettings(BaseModel):
    """What the HTTP layer accepts and which headers it sends."""

    max_body_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted; larger ones get 413 while streaming.",
    )
    max_upload_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1024,
        description="Largest file upload (datasets, photos, models); streamed to storage, 413 "
        "past the limit.",
    )
    cors_origins: CommaList = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (comma-separated); none if empty.",
    )
    cors_allow_credentials: bool = Field(
        default=True, description="Let allowed origins send cookies. Never allowed with `*`."
    )
    trusted_hosts: CommaList = Field(
        default_factory=list,
        description="Host names the server answers to (comma-separated, `*.example.com` allowed). "
        "Empty: any.",
    )
    anonymous_requests_per_ip: RateLimitText = Field(
        default="120/minute",
        description="Calls to public API operations per client address (signed-in callers "
        "count against their plan instead).",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies trusted to set X-Forwarded-Proto/For (uvicorn's setting).",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="A request's headers must arrive whole within this time (from its first "
        "byte); else 408 and the connection closes. An idle new connection closes after it too.",
    )
    body_idle_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest pause allowed in the middle of a request body; 408 past it.",
    )
    body_min_bytes_per_second: int = Field(
        default=1024,
        ge=0,
        description="Slowest average rate a request body may arrive at once "
        "`body_grace_seconds` have passed; 408 below it. 0: no minimum.",
    )
    body_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Time a request body has before `body_min_bytes_per_second` applies.",
    )

    _split = field_validator("cors_origins", "trusted_hosts", mode="before")(_split_list)

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> HttpSettings:
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ValueError(
                "ATELIER_HTTP__CORS_ORIGINS may not contain '*' while "
                "ATELIER_HTTP__CORS_ALLOW_CREDENTIALS is true: list the origins instead"
            )
        return self


class AuthSettings(BaseModel):
    """Sign-up, passwords and tokens."""

    registration: Literal["open", "invite", "closed"] = Field(
        default="open",
        description="`open`: anyone may sign up; `invite`: only with an invitation; `closed`: "
        "accounts are made by operators.",
    )
    default_plan: str = Field(default="trial", description="Plan of a new organization.")
    plan_after_trial: str = Field(
        default="free", description="Plan an organization moves to when its trial ends."
    )
    trial_check_seconds: float = Field(
        default=600,
        gt=0,
        description="How often `identity.expire_trials` moves organizations whose trial has "
        "ended to `plan_after_trial`.",
    )
    access_token_minutes: int = Field(
        default=15, ge=1, le=1440, description="Lifetime of an access token (JWT)."
    )
    refresh_token_days: int = Field(
        default=30, ge=1, le=365, description="Lifetime of a refresh token."
    )
    issuer: str = Field(default="atelier", description="`iss` of the tokens Atelier issues.")
    password_min_length: int = Field(default=10, ge=8, description="Shortest password accepted.")
    password_min_strength: int = Field(
        default=2, ge=0, le=4, description="Lowest zxcvbn score (0-4) a password must reach."
    )
    web_session_days: int = Field(
        default=14, ge=1, le=90, description="How long a web UI sign-in lasts."
    )
    invitation_days: int = Field(
        default=7, ge=1, le=90, description="How long an invitation link stays valid."
    )
    attempts_per_ip: RateLimitText = Field(
        default="30/minute",
        description="Sign-in, sign-up and refresh calls allowed from one IP address.",
    )
    failures_before_lockout: RateLimitText = Field(
        default="5/15 minutes",
        description="Failed sign-ins on one account before it is locked until the window "
        "passes; `20/day` more lock it for a day.",
    )


class OidcProviderSettings(BaseModel):
    """One OpenID Connect provider (Keycloak, Auth0, Okta, Azure AD, Google...)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$", description="Slug used in URLs.")
    display_name: str = Field(max_length=64, description="Shown on the sign-in button.")
    discovery_url: str = Field(description="`.../.well-known/openid-configuration`.")
    client_id: str
    client_secret: SecretStr | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    allowed_domains: list[str] = Field(
        default_factory=list, description="Email domains allowed to sign in; empty: any."
    )
    groups_claim: str | None = Field(
        default=None, description="Claim holding the user's groups (e.g. `groups`)."
    )
    org_id: str | None = Field(
        default=None,
        description="Organization that SSO users join, with a role mapped from "
        "their groups; unset: only their personal organization.",
    )
    role_mapping: dict[str, Literal["viewer", "member", "admin", "owner"]] = Field(
        default_factory=dict, description="Group name to role in `org_id`."
    )
    default_role: Literal["viewer", "member", "admin"] | None = Field(
        default="member", description="Role in `org_id` when no group maps; unset: do not join."
    )


class SmtpSettings(BaseModel):
    """Outgoing email (invitations). Unset host: messages are logged instead of sent."""

    host: str | None = Field(default=None, description="SMTP server; unset: no email is sent.")
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="`starttls` (587), `tls` (465) or `none` (local relay)."
    )
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(default="Atelier <atelier@localhost>", description="The From address.")


class LoggingSettings(BaseModel):
    """How logs are written."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level written."
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="`json` for machines, `console` for people; `auto` is console in the embedded "
        "profile and json in production.",
    )


class Settings(BaseSettings):
    """Atelier's whole configuration. See docs/configuration.md (generated from this class)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    profile: Literal["embedded", "production"] = Field(
        default="embedded",
        description="`embedded` runs with no external service; `production` refuses weak secrets.",
    )
    data_dir: Path = Field(
        default=Path("var"), description="Folder for local state (embedded secret key, metrics)."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs sessions, tokens and URLs. Required in production (32+ characters); "
        "generated into `<data_dir>/secret.key` in the embedded profile.",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Public address of this Atelier (redirect URIs for single sign-on, links).",
    )
    oidc_providers: list[OidcProviderSettings] = Field(
        default_factory=list,
        description="Single sign-on providers, as a JSON list (see docs/identity.md).",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for shared state (rate limits) and the default job broker, e.g. "
        "`redis://127.0.0.1:6379/0`. Unset: kept in each process's memory.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="An MLflow tracking server (e.g. `http://mlflow:5000`): every AutoML run is "
        "also logged there (parameters, trials, metrics, report, model). Needs the `mlflow` "
        "extra. Unset: nothing is sent.",
    )
    default_language: Literal["en", "fr"] | None = Field(
        default=None,
        description="Language of the web UI when the visitor has not chosen one. Unset: taken "
        "from the browser's Accept-Language, else English.",
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    datasets: DatasetsSettings = Field(default_factory=DatasetsSettings)
    automl: AutomlSettings = Field(default_factory=AutomlSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @model_validator(mode="after")
    def _check_profile(self) -> Settings:
        # Local state follows the data folder unless a location was given explicitly.
        if "url" not in self.database.model_fields_set:
            self.database.url = f"sqlite+aiosqlite:///{self.data_dir / 'atelier.db'}"
        if "root" not in self.storage.model_fields_set:
            self.storage.root = self.data_dir / "blobs"
        if self.jobs.executor == "celery" and not self.broker_url:
            raise ValueError(
                "the celery executor needs a broker: set ATELIER_JOBS__BROKER_URL or "
                "ATELIER_REDIS_URL"
            )
        if self.profile == "production":
            problems = secret_problems(self)
            if problems:
                raise ValueError("\n".join(problems))
        elif self.secret_key is None:
            self.secret_key = SecretStr(_embedded_secret_key(self.data_dir))
        return self

    @property
    def broker_url(self) -> str | None:
        return self.jobs.broker_url or self.redis_url

    @property
    def log_format(self) -> Literal["json", "console"]:
        if self.logging.format != "auto":
            return self.logging.format
        return "console" if self.profile == "embedded" else "json"


def env_name(*path: str) -> str:
    """The environment variable that sets a (nested) field: `env_name("database", "url")`."""
    return ENV_PREFIX + "__".join(part.upper() for part in path)


def _iter_secrets(model: BaseModel, path: tuple[str, ...] = ()):
    """(path, value) of every secret field, in nested sections too; unset ones give None."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _iter_secrets(value, (*path, name))
        elif field.annotation is SecretStr or SecretStr in get_args(field.annotation):
            yield (*path, name), value


# Secrets that must always be set in production; other secret fields are checked when set.
REQUIRED_SECRETS = {("secret_key",)}


def secret_problems(settings: Settings) -> list[str]:
    """Every secret that is missing, a known default or too short, named by its variable."""
    problems = []
    for path, value in _iter_secrets(settings):
        name = env_name(*path)
        if value is None or not value.get_secret_value():
            if path in REQUIRED_SECRETS:
                problems.append(f"{name} is missing")
            continue
        text = value.get_secret_value()
        if text.strip().lower() in KNOWN_DEFAULT_SECRETS:
            problems.append(f"{name} is a known default value")
        elif path in REQUIRED_SECRETS and len(text) < MIN_SECRET_LENGTH:
            problems.append(
                f"{name} is too short ({len(text)} characters, at least {MIN_SECRET_LENGTH})"
            )
        elif path in REQUIRED_SECRETS and len(set(text)) < 8:
            problems.append(f"{name} is too repetitive (fewer than 8 distinct characters)")
    return problems


def _embedded_secret_key(data_dir: Path) -> str:
    """Read the embedded profile's secret key, creating it (mode 0600) on first start.

    The key is written to a private temporary file and hard-linked into place, which fails if
    another process got there first: then that process's key is the one everybody reads.
    """
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".secret-")  # created with mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(secrets.token_urlsafe(48))
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_text(encoding="utf-8").strip()


def describe_error(exc: ValidationError) -> list[str]:
    """Turn a Settings validation error into one readable line per problem."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(part) for part in err["loc"] if not isinstance(part, int)]
        message = err["msg"].removeprefix("Value error, ")
        if loc:
            lines.append(f"{env_name(*loc)}: {message}")
        else:
            lines.extend(message.splitlines())
    return lines
