"""API tokens (by API and by CLI), and `users create`."""

from __future__ import annotations

import pytest

from tests.auth.conftest import PASSWORD, assert_envelope, snapshot
from tests.conftest import make_user


@pytest.fixture
def runner(app):
    """The CLI as `flask --app wsgi` runs it: inside an app context."""
    with app.app_context():
        yield app.test_cli_runner()


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_create_list_use_and_revoke_a_token_by_api(app, client, db):
    from app.models import ApiToken

    make_user(app, "mes", "operator")
    made = client.post("/api/tokens", json={"userName": "mes", "name": "MES line 2"})
    assert made.status_code == 201, made.get_json()
    body = made.get_json()
    secret, token = body["secret"], body["token"]
    assert secret.startswith("tpz_") and len(secret) > 40
    assert token["userName"] == "mes" and token["name"] == "MES line 2"
    assert token["lastUsedAt"] is None and token["revokedAt"] is None
    assert secret.startswith(token["prefix"])

    # Stored hashed: the secret is nowhere in the database, and never listed again.
    stored = db.session.get(ApiToken, token["id"])
    assert stored.token_hash != secret and secret not in str(snapshot(app))
    db.session.remove()
    listed = client.get("/api/tokens").get_json()["tokens"]
    assert [t["id"] for t in listed if t["name"] == "MES line 2"] == [token["id"]]
    assert secret not in str(listed) and "tokenHash" not in str(listed)

    # Using it: it acts as its user, and its last-used time is set.
    script = app.test_client()
    me = script.get("/api/me", headers=_bearer(secret))
    assert me.status_code == 200 and me.get_json()["user"]["name"] == "mes"
    used = {t["id"]: t for t in client.get("/api/tokens").get_json()["tokens"]}[token["id"]]
    assert used["lastUsedAt"] is not None

    # Revoked: refused at once.
    revoked = client.delete(f"/api/tokens/{token['id']}")
    assert revoked.status_code == 200 and revoked.get_json()["token"]["revokedAt"] is not None
    assert_envelope(script.get("/api/me", headers=_bearer(secret)), 401)
    assert_envelope(script.post("/api/jobs", json={}, headers=_bearer(secret)), 401)
    # Revoking again changes nothing; an unknown id is a 404.
    assert client.delete(f"/api/tokens/{token['id']}").status_code == 200
    assert_envelope(client.delete("/api/tokens/999999"), 404)


def test_a_token_for_an_unknown_user_is_a_404(client):
    assert_envelope(client.post("/api/tokens", json={"userName": "ghost", "name": "x"}), 404)


BAD_HEADERS = [
    "Bearer nope",
    "Bearer tpz_" + "A" * 43,
    "Bearer tpz_" + "A" * 400,
    "Bearer ",
    "bearer tpz_",
    "Basic dXNlcjpwYXNz",
    "Bearer tpz_' OR '1'='1",
]


def test_a_bad_authorization_header_is_a_401(anon_client):
    for header in BAD_HEADERS:
        response = anon_client.get("/api/me", headers={"Authorization": header})
        assert "Traceback" not in assert_envelope(response, 401)["error"]


def test_a_bad_token_does_not_lock_out_the_public_paths(anon_client):
    assert anon_client.get("/healthz", headers=_bearer("tpz_nope")).status_code == 200
    assert anon_client.get("/login", headers=_bearer("tpz_nope")).status_code == 200


def test_create_and_revoke_a_token_with_the_cli(app, runner, anon_client):
    make_user(app, "mes", "operator")
    result = runner.invoke(args=["tokens", "create", "--user", "mes", "--name", "line 2"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]  # the last line is the token itself
    assert secret.startswith("tpz_")
    assert anon_client.get("/api/me", headers=_bearer(secret)).get_json()["user"]["name"] == "mes"

    token_id = result.output.split()[1]  # "Token <id> (line 2) for mes; ..."
    result = runner.invoke(args=["tokens", "revoke", token_id])
    assert result.exit_code == 0, result.output
    assert_envelope(anon_client.get("/api/me", headers=_bearer(secret)), 401)

    assert runner.invoke(args=["tokens", "create", "--user", "ghost"]).exit_code != 0
    assert runner.invoke(args=["tokens", "revoke", "999999"]).exit_code != 0


def test_users_create_with_the_cli(app, runner, anon_client, db):
    from app.models import User

    result = runner.invoke(
        args=["users", "create", "ana", "--role", "operator", "--password", PASSWORD]
    )
    assert result.exit_code == 0, result.output
    user = db.session.scalar(db.select(User).where(User.name == "ana"))
    assert user.role == "operator"
    assert user.password_hash.startswith("scrypt:") and PASSWORD not in user.password_hash
    db.session.remove()
    # The password is asked for when not given (twice, hidden).
    result = runner.invoke(
        args=["users", "create", "ravi", "--role", "dispatcher"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output


def test_users_create_refuses_a_bad_role_or_password(app, runner, db):
    from app.models import User

    for args, message in [
        (["ana", "--role", "admin", "--password", PASSWORD], "admin"),
        (["ana", "--role", "operator", "--password", "short"], "at least 8"),
        (["ana", "--password", PASSWORD], "--role"),
        (["  ", "--role", "operator", "--password", PASSWORD], "1 to 120 characters"),
    ]:
        result = runner.invoke(args=["users", "create", *args])
        assert result.exit_code != 0, args
        assert message in result.output, result.output
    assert db.session.scalar(db.select(db.func.count()).select_from(User)) == 0


def test_users_create_refuses_a_duplicate(app, runner):
    args = ["users", "create", "ana", "--role", "operator", "--password", PASSWORD]
    assert runner.invoke(args=args).exit_code == 0
    result = runner.invoke(args=args)
    assert result.exit_code != 0 and "already exists" in result.output


def test_users_by_api(client, anon_client):
    made = client.post("/api/users", json={"name": "ana", "role": "operator", "password": PASSWORD})
    assert made.status_code == 201 and "password" not in str(made.get_json()).lower()
    assert_envelope(
        client.post("/api/users", json={"name": "ana", "role": "operator", "password": PASSWORD}),
        409,
    )
    bad = client.post("/api/users", json={"name": "bo", "role": "root", "password": PASSWORD})
    assert "role" in assert_envelope(bad, 400)["details"]
    short = client.post("/api/users", json={"name": "bo", "role": "operator", "password": "x"})
    assert "password" in assert_envelope(short, 400)["details"]
    names = [u["name"] for u in client.get("/api/users").get_json()["users"]]
    assert "ana" in names and "bo" not in names


def test_production_passwords_use_full_strength_scrypt():
    from config import Config, TestConfig

    assert Config.PASSWORD_HASH_METHOD == "scrypt"  # werkzeug's N=2**15, r=8, p=1
    assert TestConfig.PASSWORD_HASH_METHOD.startswith("scrypt:")
