"""A signed-in admin for tests that call the console's JSON API directly."""

from __future__ import annotations

from picgate.admin import auth
from tests import orm
from tests.conftest import Gateway
from tests.orm import AdminSession

ADMIN_PASSWORD = "robust-password-123"


def admin_session(gateway: Gateway) -> tuple[str, str]:
    """Create the admin in the gateway's database; the session cookie token and its CSRF token."""
    db = gateway.services.db
    db.write(lambda s: auth.set_admin(s, username="admin", password=ADMIN_PASSWORD))
    token = db.write(lambda s: auth.create_session(s, auth.ADMIN_ID))
    row = orm.read(db, lambda s: s.get(AdminSession, auth.token_digest(token)))
    assert row is not None
    return token, row.csrf_token
