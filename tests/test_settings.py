import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from atelier.settings import MIN_SECRET_LENGTH, DatabaseSettings, Settings, describe_error
from atelier.settings_reference import render_reference
from tests.conftest import TEST_SECRET

STRONG = TEST_SECRET


def production(**values) -> Settings:
    return Settings(_env_file=None, profile="production", **values)


def problems_of(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return describe_error(exc.value)


def test_production_refuses_a_missing_secret():
    with pytest.raises(ValidationError) as exc:
        production()
    assert "ATELIER_SECRET_KEY is missing" in problems_of(exc)


@pytest.mark.parametrize("weak", ["changeme", "secret", "minioadmin", "CHANGEME", "password"])
def test_production_refuses_known_default_secrets(weak):
    with pytest.raises(ValidationError) as exc:
        production(secret_key=weak)
    assert "ATELIER_SECRET_KEY is a known default value" in problems_of(exc)


def test_production_refuses_short_and_repetitive_secrets():
    with pytest.raises(ValidationError) as exc:
        production(secret_key="x7" * 5)
    assert any("too short (10 characters" in p for p in problems_of(exc))
    with pytest.raises(ValidationError) as exc:
        production(secret_key="ab" * MIN_SECRET_LENGTH)
    assert any("too repetitive" in p for p in problems_of(exc))


def test_production_accepts_a_strong_secret(tmp_path):
    settings = production(secret_key=STRONG, data_dir=tmp_path)
    assert settings.secret_key.get_secret_value() == STRONG
    assert settings.log_format == "json"
    assert not (tmp_path / "secret.key").exists()


def test_production_reads_secrets_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ATELIER_PROFILE", "production")
    monkeypatch.setenv("ATELIER_SECRET_KEY", "changeme")
    with pytest.raises(ValidationError) as exc:
        Settings(_env_file=None)
    assert problems_of(exc) == ["ATELIER_SECRET_KEY is a known default value"]


def test_embedded_profile_generates_a_private_secret_key_once(tmp_path):
    first = Settings(_env_file=None, data_dir=tmp_path)
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = first.secret_key.get_secret_value()
    assert len(key) >= MIN_SECRET_LENGTH
    assert key_file.read_text() == key
    again = Settings(_env_file=None, data_dir=tmp_path)
    assert again.secret_key.get_secret_value() == key
    assert first.log_format == "console"


def test_nested_settings_come_from_double_underscore_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("ATELIER_DATABASE__URL", "postgresql://u@db:5432/atelier")
    monkeypatch.setenv("ATELIER_HTTP__CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("ATELIER_HTTP__TRUSTED_HOSTS", '["atelier.example"]')
    settings = Settings(_env_file=None, data_dir=tmp_path)
    assert settings.database.url == "postgresql+asyncpg://u@db:5432/atelier"
    assert settings.http.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.http.trusted_hosts == ["atelier.example"]


def test_dotenv_file_is_read(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("ATELIER_DEFAULT_LANGUAGE=fr\n")
    monkeypatch.chdir(tmp_path)
    assert Settings(data_dir=tmp_path).default_language == "fr"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///var/a.db", "sqlite+aiosqlite:///var/a.db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_database_urls_get_their_async_driver(given, expected):
    assert DatabaseSettings(url=given).url == expected


def test_cors_wildcard_with_credentials_is_refused(tmp_path):
    with pytest.raises(ValidationError) as exc:
        Settings(_env_file=None, data_dir=tmp_path, http={"cors_origins": ["*"]})
    assert "ATELIER_HTTP__CORS_ORIGINS may not contain '*'" in " ".join(problems_of(exc))


def test_wrong_types_are_named_by_their_variable(tmp_path):
    with pytest.raises(ValidationError) as exc:
        Settings(_env_file=None, data_dir=tmp_path, http={"max_body_bytes": "lots"})
    assert problems_of(exc)[0].startswith("ATELIER_HTTP__MAX_BODY_BYTES: ")


def test_configuration_reference_is_current():
    """docs/configuration.md is generated from Settings; regenerate it when this fails:
    `atelier config reference > docs/configuration.md`."""
    committed = Path(__file__).parents[1] / "docs" / "configuration.md"
    assert committed.read_text(encoding="utf-8") == render_reference()


def test_configuration_reference_names_every_setting():
    text = render_reference()
    for name in Settings.model_fields:
        assert f"`ATELIER_{name.upper()}" in text
    for name in DatabaseSettings.model_fields:
        assert f"`ATELIER_DATABASE__{name.upper()}`" in text


def test_local_state_follows_the_data_folder(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "state")
    assert settings.database.url == f"sqlite+aiosqlite:///{tmp_path / 'state' / 'atelier.db'}"
    assert settings.storage.root == tmp_path / "state" / "blobs"


def test_explicit_locations_beat_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_DATABASE__URL", "postgresql://db/atelier")
    monkeypatch.setenv("ATELIER_STORAGE__ROOT", "/srv/blobs")
    settings = Settings(_env_file=None, data_dir=tmp_path)
    assert settings.database.url == "postgresql+asyncpg://db/atelier"
    assert settings.storage.root == Path("/srv/blobs")


def test_processes_starting_together_agree_on_one_secret_key(tmp_path):
    script = (
        "import sys; from atelier.settings import Settings; "
        "print(Settings(_env_file=None, data_dir=sys.argv[1]).secret_key.get_secret_value())"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE)
        for _ in range(6)
    ]
    keys = {p.communicate(timeout=60)[0].strip() for p in processes}
    assert len(keys) == 1
    assert (tmp_path / "secret.key").read_text() == keys.pop().decode()
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no temporary file left


def test_optional_secrets_are_checked_only_when_set(tmp_path):
    assert production(secret_key=STRONG, data_dir=tmp_path).smtp.password is None
    with pytest.raises(ValidationError) as exc:
        production(secret_key=STRONG, data_dir=tmp_path, smtp={"password": "changeme"})
    assert problems_of(exc) == ["ATELIER_SMTP__PASSWORD is a known default value"]
