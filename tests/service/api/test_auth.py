"""API keys: required when configured, one key cannot see another's jobs, per-key limits
answered with 429 and Retry-After. (A gateway without workers: jobs stay queued.)"""

from __future__ import annotations

import pytest

from service.settings import token_digest
from tests.helpers.stack import GatewayServer, make_settings, submit

pytestmark = pytest.mark.timeout(120)
ALICE, BOB = "alice-secret-token", "bob-secret-token"


@pytest.fixture(scope="module")
def keyed(redis_server, tmp_path_factory):
    settings = make_settings(
        redis_server.url, tmp_path_factory.mktemp("keyed"),
        auth={"keys": {"alice": token_digest(ALICE), "bob": token_digest(BOB)}},
        limits={"max_queued_jobs": 2, "max_active_jobs": 3},
    )  # fmt: skip
    gateway = GatewayServer(settings)
    yield gateway
    gateway.stop()


def test_keys_are_required(keyed, example_clip):
    video, masks = example_clip
    with keyed.client() as anonymous, keyed.client("wrong-token") as wrong:
        for client in (anonymous, wrong):
            unknown = "/v1/jobs/" + "0" * 32
            for method, path in (("GET", "/v1/jobs"), ("GET", unknown), ("DELETE", unknown),
                                 ("POST", "/v1/uploads")):  # fmt: skip
                response = client.request(method, path, headers={"Tus-Resumable": "1.0.0"})
                assert response.status_code == 401, (method, path, response.text)
                assert response.json()["code"] == "unauthenticated"
                assert response.headers["www-authenticate"] == "Bearer"
            refused = submit(client, video, [masks], {"size": 96})
            assert refused.status_code == 401
        assert anonymous.get("/healthz").status_code == 200  # probes need no key


def test_another_keys_jobs_are_invisible(keyed, example_clip):
    video, masks = example_clip
    with keyed.client(ALICE) as alice, keyed.client(BOB) as bob:
        job = submit(alice, video, [masks], {"size": 96}).json()
        assert alice.get(f"/v1/jobs/{job['id']}").status_code == 200
        for method, suffix in (("GET", ""), ("GET", "/events"), ("GET", "/result"),
                               ("GET", "/frames/0.png"), ("DELETE", "")):  # fmt: skip
            response = bob.request(method, f"/v1/jobs/{job['id']}{suffix}")
            assert response.status_code == 404, (method, suffix)
            assert response.json()["code"] == "not_found"
        assert job["id"] not in {j["id"] for j in bob.get("/v1/jobs").json()["jobs"]}
        assert job["id"] in {j["id"] for j in alice.get("/v1/jobs").json()["jobs"]}
        assert alice.delete(f"/v1/jobs/{job['id']}").status_code == 204


def test_per_key_limits_answer_429_with_retry_after(keyed, example_clip):
    video, masks = example_clip
    with keyed.client(ALICE) as alice, keyed.client(BOB) as bob:
        queued = [submit(alice, video, [masks], {"size": 96}) for _ in range(2)]
        assert [r.status_code for r in queued] == [202, 202]
        over = submit(alice, video, [masks], {"size": 96})
        assert over.status_code == 429 and over.json()["code"] == "rate_limited"
        assert int(over.headers["retry-after"]) > 0
        assert "2 queued" in over.json()["message"]
        assert submit(bob, video, [masks], {"size": 96}).status_code == 202  # bob's own limit
        alice.delete(f"/v1/jobs/{queued[0].json()['id']}")
        assert submit(alice, video, [masks], {"size": 96}).status_code == 202  # room again
