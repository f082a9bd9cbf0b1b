"""API keys: required when configured, one key cannot see another's jobs, per-key limits
answered with 429 and Retry-After. (A gateway without workers: jobs stay queued.)"""

from __future__ import annotations

import pytest

from service.settings import token_digest
from tests.helpers.stack import GatewayServer, make_settings, submit

pytestmark = pytest.mark.timeout(120)
ALICE, BOB, CAROL = "alice-secret-token", "bob-secret-token", "carol-secret-token"


@pytest.fixture(scope="module")
def keyed(redis_server, tmp_path_factory):
    settings = make_settings(
        redis_server.url, tmp_path_factory.mktemp("keyed"),
        auth={"keys": {"alice": token_digest(ALICE), "bob": token_digest(BOB),
                       "carol": token_digest(CAROL)}},
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


PUBLIC = {"/healthz", "/readyz", "/metrics", "/v1/info"}  # probes and what the page asks first


def test_every_operation_of_the_openapi_document_needs_a_key(keyed):
    """Enumerated from the gateway's own document: a new route cannot forget the key."""
    with keyed.client() as anonymous:
        document = anonymous.get("/openapi.json").json()
        tried = 0
        for path, item in document["paths"].items():
            concrete = path
            for name in ("job_id", "upload_id", "uuid"):
                concrete = concrete.replace("{" + name + "}", "0" * 32)
            concrete = concrete.replace("{index}", "0")
            for method in item:
                response = anonymous.request(method.upper(), concrete,
                                             headers={"Tus-Resumable": "1.0.0"})  # fmt: skip
                if path in PUBLIC:
                    assert response.status_code != 401, (method, path)
                    continue
                tried += 1
                assert response.status_code == 401, (method, path, response.text[:200])
                if method != "head":
                    assert response.json()["code"] == "unauthenticated"
        assert tried >= 15


def test_another_keys_uploads_frames_revisions_and_proposals_are_invisible(keyed, example_clip):
    video, masks = example_clip
    with keyed.client(CAROL) as alice, keyed.client(BOB) as bob:
        job = submit(alice, video, [masks], {"size": 96}).json()
        tus = {"Tus-Resumable": "1.0.0"}
        created = alice.post("/v1/uploads", headers={**tus, "Upload-Length": "3"})
        upload = created.headers["location"].rstrip("/").split("/")[-1]
        offset = {**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        alice.patch(f"/v1/uploads/{upload}", content=b"abc", headers=offset)
        assert alice.get(f"/v1/jobs/{job['id']}/video/0.jpg").status_code == 200
        for method, path, data in (
            ("GET", f"/v1/jobs/{job['id']}/video/0.jpg", None),
            ("POST", f"/v1/jobs/{job['id']}/revisions", {"frame": "1", "remove": "[1]"}),
            ("POST", "/v1/proposals", {"job_id": job["id"], "frame": "0"}),
            ("POST", "/v1/proposals", {"upload_id": upload, "frame": "0"}),
            ("GET", f"/v1/uploads/{upload}/video", None),
            ("GET", f"/v1/uploads/{upload}/frames/0.jpg", None),
            ("HEAD", f"/v1/uploads/{upload}", None),
        ):  # fmt: skip
            response = bob.request(method, path, data=data, headers=tus)
            assert response.status_code == 404, (method, path, response.text[:200])
        assert alice.delete(f"/v1/jobs/{job['id']}").status_code == 204


@pytest.mark.parametrize(
    "bad_id",
    ["../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%00", "0" * 31 + "\u0660",
     "/etc/passwd", "0" * 32 + "/../" + "1" * 32, "ＡＢ" * 16],
)  # fmt: skip
def test_ids_from_clients_never_become_paths(keyed, bad_id):
    with keyed.client(ALICE) as alice:
        for path in (f"/v1/jobs/{bad_id}", f"/v1/jobs/{bad_id}/frames/0.png",
                     f"/v1/jobs/{bad_id}/video/0.jpg", f"/v1/uploads/{bad_id}/video",
                     f"/v1/uploads/{bad_id}/frames/0.jpg"):  # fmt: skip
            response = alice.get(path)
            assert response.status_code in (404, 400), (path, response.status_code)
        proposal = alice.post("/v1/proposals", data={"upload_id": bad_id, "frame": "0"})
        assert proposal.status_code == 404, proposal.text


def test_no_cross_origin_access_and_no_token_in_the_logs(keyed, caplog):
    caplog.set_level("DEBUG")
    with keyed.client(ALICE) as alice:
        asks = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
        preflight = alice.options("/v1/jobs", headers=asks)
        listed = alice.get("/v1/jobs", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in preflight.headers  # CORS is off
    assert "access-control-allow-origin" not in listed.headers
    assert listed.status_code == 200
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "request" in logged and ALICE not in logged
