"""The `atelier` command, run as a real subprocess."""

import json
import re

import pytest

from atelier import __version__
from tests.conftest import TEST_SECRET, cli_env, run_cli


@pytest.fixture
def fresh_env(tmp_path):
    """An embedded setup on its own SQLite file, whatever database the suite runs on."""
    return cli_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'var' / 'atelier.db'}")


def doctor(env, cwd) -> tuple[int, dict]:
    result = run_cli("doctor", "--json", env=env, cwd=cwd)
    return result.returncode, json.loads(result.stdout)


def checks_of(report: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def test_version(tmp_path, fresh_env):
    result = run_cli("version", env=fresh_env, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == __version__


def test_migrate_upgrade_current_and_downgrade(tmp_path, fresh_env):
    before = run_cli("migrate", "current", env=fresh_env, cwd=tmp_path)
    assert "database: (empty)" in before.stdout
    assert "[behind]" in before.stdout
    up = run_cli("migrate", "upgrade", env=fresh_env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    current = run_cli("migrate", "current", env=fresh_env, cwd=tmp_path)
    assert re.search(r"database: (\w+)\s+head: \1\s+\[up to date\]", current.stdout)
    down = run_cli("migrate", "downgrade", "base", env=fresh_env, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert "database: (empty)" in run_cli("migrate", "current", env=fresh_env, cwd=tmp_path).stdout


def test_doctor_passes_on_a_healthy_embedded_setup(tmp_path, fresh_env):
    assert run_cli("migrate", "upgrade", env=fresh_env, cwd=tmp_path).returncode == 0
    code, report = doctor(fresh_env, tmp_path)
    assert code == 0
    assert report["ok"] is True
    assert checks_of(report) == {
        "config": "ok",
        "database": "ok",
        "migrations": "ok",
        "storage": "ok",
        "broker": "skip",
        "secrets": "skip",
    }


def test_doctor_passes_on_the_suites_database(tmp_path, database_url, engine):
    code, report = doctor(cli_env(tmp_path, database_url), tmp_path)
    assert code == 0, report
    assert checks_of(report)["migrations"] == "ok"


def test_doctor_table_for_people(tmp_path, fresh_env):
    run_cli("migrate", "upgrade", env=fresh_env, cwd=tmp_path)
    result = run_cli("doctor", env=fresh_env, cwd=tmp_path)
    assert result.returncode == 0
    for name in ("config", "database", "migrations", "storage", "broker", "secrets"):
        assert name in result.stdout
    # Through a pipe the table is as wide as it needs: a path stays whole on its row.
    storage = next(line for line in result.stdout.splitlines() if "storage" in line)
    assert f"{tmp_path / 'blobs'} is writable" in storage


def test_doctor_fails_when_migrations_are_missing(tmp_path, fresh_env):
    code, report = doctor(fresh_env, tmp_path)
    assert code == 1
    assert report["ok"] is False
    migrations = next(c for c in report["checks"] if c["name"] == "migrations")
    assert migrations["status"] == "fail"
    assert "atelier migrate upgrade" in migrations["detail"]


def test_doctor_fails_when_storage_is_not_writable(tmp_path, fresh_env):
    run_cli("migrate", "upgrade", env=fresh_env, cwd=tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the blob folder should be")
    code, report = doctor({**fresh_env, "ATELIER_STORAGE__ROOT": str(blocker)}, tmp_path)
    assert code == 1
    assert checks_of(report)["storage"] == "fail"


def test_doctor_fails_when_the_database_is_unreachable(tmp_path, fresh_env):
    env = {**fresh_env, "ATELIER_DATABASE__URL": "postgresql://postgres@127.0.0.1:1/none"}
    code, report = doctor(env, tmp_path)
    assert code == 1
    assert checks_of(report)["database"] == "fail"
    assert checks_of(report)["migrations"] == "skip"


def test_doctor_fails_on_an_invalid_configuration(tmp_path, fresh_env):
    env = {**fresh_env, "ATELIER_HTTP__MAX_BODY_BYTES": "lots"}
    code, report = doctor(env, tmp_path)
    assert code == 1
    config = report["checks"][0]
    assert config["status"] == "fail"
    assert any(p.startswith("ATELIER_HTTP__MAX_BODY_BYTES") for p in config["problems"])


def test_doctor_names_weak_secrets_in_production(tmp_path, fresh_env):
    env = {**fresh_env, "ATELIER_PROFILE": "production", "ATELIER_SECRET_KEY": "changeme"}
    code, report = doctor(env, tmp_path)
    assert code == 1
    assert "ATELIER_SECRET_KEY is a known default value" in report["checks"][0]["problems"]


def test_doctor_accepts_strong_secrets_in_production(tmp_path, fresh_env):
    run_cli("migrate", "upgrade", env=fresh_env, cwd=tmp_path)
    env = {**fresh_env, "ATELIER_PROFILE": "production", "ATELIER_SECRET_KEY": TEST_SECRET}
    code, report = doctor(env, tmp_path)
    assert code == 0, report
    assert checks_of(report)["secrets"] == "ok"


@pytest.mark.parametrize("command", ["api", "up"])
def test_production_with_default_secrets_refuses_to_start(tmp_path, fresh_env, command):
    env = {**fresh_env, "ATELIER_PROFILE": "production", "ATELIER_SECRET_KEY": "changeme"}
    result = run_cli(command, "--port", "1", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "configuration is invalid" in result.stderr
    assert "ATELIER_SECRET_KEY is a known default value" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_without_a_secret_names_it(tmp_path, fresh_env):
    env = {**fresh_env, "ATELIER_PROFILE": "production"}
    result = run_cli("api", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "ATELIER_SECRET_KEY is missing" in result.stderr


def test_config_show_masks_secrets(tmp_path, fresh_env):
    env = {**fresh_env, "ATELIER_SECRET_KEY": "visible-only-to-the-operator-0123456789"}
    result = run_cli("config", "show", env=env, cwd=tmp_path)
    assert result.returncode == 0
    shown = json.loads(result.stdout)
    assert shown["secret_key"] == "**********"
    assert "visible-only" not in result.stdout


def test_up_with_an_unreachable_database_says_so_without_the_password(tmp_path, fresh_env):
    env = {**fresh_env, "ATELIER_DATABASE__URL": "postgresql://u:hunter2@127.0.0.1:1/none"}
    result = run_cli("up", "--port", "1", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "The database at postgresql+asyncpg://u:***@127.0.0.1:1/none failed" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_migrating_to_an_unknown_revision_is_refused(tmp_path, fresh_env):
    result = run_cli("migrate", "downgrade", "nonesuch", env=fresh_env, cwd=tmp_path)
    assert result.returncode == 1
    assert "Migration refused: Can't locate revision identified by 'nonesuch'" in result.stderr


def test_admin_create_user_makes_a_superadmin_once(tmp_path, fresh_env):
    assert run_cli("migrate", "upgrade", env=fresh_env, cwd=tmp_path).returncode == 0
    env = {**fresh_env, "ATELIER_ADMIN_PASSWORD": "a long operator passphrase 77"}
    created = run_cli(
        "admin", "create-user", "--email", "Op@Example.com", "--superadmin", env=env, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    assert re.match(r"Created superadmin op@example.com \(usr_\w+\)\.", created.stdout)
    again = run_cli("admin", "create-user", "--email", "op@example.com", env=env, cwd=tmp_path)
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_admin_create_user_refuses_a_weak_password(tmp_path, fresh_env):
    assert run_cli("migrate", "upgrade", env=fresh_env, cwd=tmp_path).returncode == 0
    env = {**fresh_env, "ATELIER_ADMIN_PASSWORD": "short"}
    result = run_cli("admin", "create-user", "--email", "op@example.com", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "Use at least 10 characters" in result.stderr
