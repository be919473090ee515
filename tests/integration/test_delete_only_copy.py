""" "Delete local" on an image whose local copy is its only one (R2 configured, upload not done)
is refused unless forced: it deleted the only copy without a word."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing

from picgate.db.models import R2_UPLOADED
from picgate.library.records import ImageOrigin
from tests import orm
from tests.conftest import Gateway
from tests.orm import Image
from tests.support.admin import signed_in
from tests.support.images import make_image

# R2 configured, but nothing listens there: every upload stays pending or fails
DEAD_R2 = {
    "r2_endpoint_url": "http://127.0.0.1:9",
    "r2_access_key_id": "testing",
    "r2_secret_access_key": "testing",
    "r2_bucket_name": "nowhere",
}


def test_delete_local_only_copy_refused_409_then_forced(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway(**DEAD_R2)
    image = gateway.services.library.save_sync(
        make_image("PNG", 5_000, seed=21), origin=ImageOrigin("test")
    )
    path = gateway.services.cache.path(image.id, image.ext)
    client, token = signed_in(gateway.url)
    with closing(client):
        headers = {"X-CSRF-Token": token}
        body = {"ids": [image.id], "mode": "local"}
        refused = client.post("/admin/api/images/delete", json=body, headers=headers)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "only_local_copy"
        assert "not in R2 yet" in error["message"] and "force" in error["message"]
        assert path.is_file()  # nothing was deleted
        row = orm.read(gateway.services.db, lambda s: s.get(Image, image.id))
        assert row is not None and row.local and row.r2_state != R2_UPLOADED

        forced = client.post(
            "/admin/api/images/delete", json={**body, "force": True}, headers=headers
        )
        assert forced.status_code == 200, forced.text
        assert forced.json()["result"]["local"] == 1
    assert not path.exists()
