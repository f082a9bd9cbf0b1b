"""A request body that stops arriving is answered 408; a complete request is never cut."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.helpers.stack import GatewayServer, make_settings, submit

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def gateway(redis_server, tmp_path_factory):
    settings = make_settings(redis_server.url, tmp_path_factory.mktemp("idle"),
                             limits={"body_idle_timeout_s": 1.0},
                             jobs={"proposals_timeout_s": 1.0})  # fmt: skip
    server = GatewayServer(settings)
    yield server
    server.stop()


def _stalled(port: int, head: bytes, body: bytes) -> tuple[bytes, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while not answer.endswith(b"}"):  # the JSON error body ends the answer
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer, time.monotonic() - started


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 100000\r\n\r\n",
        b"PATCH /v1/uploads/0123456789abcdef0123456789abcdef HTTP/1.1\r\nHost: x\r\n"
        b"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
        b"Content-Type: application/offset+octet-stream\r\nContent-Length: 100000\r\n\r\n",
        b"POST /v1/proposals HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        b"boundary=b\r\nContent-Length: 5000\r\n\r\n",
    ],
)
def test_a_stalled_body_is_answered_408(gateway, head):
    answer, seconds = _stalled(gateway.port, head, b"--b\r\nContent-Disposition: form")
    status = answer.split(b"\r\n", 1)[0]
    assert status in (b"HTTP/1.1 408 Request Timeout", b"HTTP/1.1 404 Not Found"), answer[:300]
    if status.endswith(b"408 Request Timeout"):
        assert b'"request_timeout"' in answer and seconds < 5


def test_an_event_stream_outlives_the_body_timeout(gateway, example_clip):
    with gateway.client() as http:
        job = submit(http, *example_clip[:1], [example_clip[1]]).json()  # no worker: queued
        with pytest.raises(httpx.ReadTimeout):  # open, and not cut after the 1 s body limit
            with http.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=3.0) as events:
                for _ in events.iter_lines():
                    pass
        http.delete(f"/v1/jobs/{job['id']}")


def test_an_answer_before_the_body_closes_the_connection(gateway):
    """Found by the HTTP fuzzing: refused from its headers, a request whose declared body never
    came left the connection waiting for it, and the next request on it unanswered."""
    head = (
        b"PATCH /v1/uploads/0123456789abcdef0123456789abcdef HTTP/1.1\r\nHost: x\r\n"
        b"Tus-Resumable: 0.2\r\nUpload-Offset: 0\r\nContent-Length: 110203\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(4096):  # ends when the server closes the connection
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 4"), answer[:200]
    assert b"connection: close" in rest.lower()


def test_proposals_nobody_answers_are_503_and_an_unfinished_upload_409(gateway, example_clip):
    """This gateway has no worker: a proposal request waits its timeout, then 503 with
    Retry-After; a frame of an upload still in progress is refused."""
    tus = {"Tus-Resumable": "1.0.0"}
    with gateway.client() as http:
        started = time.monotonic()
        waited = http.post("/v1/proposals", files={"image": ("f.png", b"png?")})
        assert waited.status_code == 503 and waited.json()["code"] == "unavailable"
        assert waited.headers["retry-after"] and time.monotonic() - started < 5
        created = http.post("/v1/uploads", headers={**tus, "Upload-Length": "10"})
        upload = created.headers["location"].rstrip("/").split("/")[-1]
        for path in (f"/v1/uploads/{upload}/video", f"/v1/uploads/{upload}/frames/0.jpg"):
            unfinished = http.get(path)
            assert unfinished.status_code == 409, unfinished.text
            assert unfinished.json()["code"] == "failed_precondition"
        job = submit(http, *example_clip[:1], [example_clip[1]]).json()  # stays queued
        for index, status, code in ((-1, 400, "invalid_argument"), (72, 422, "frame_range")):
            refused = http.get(f"/v1/jobs/{job['id']}/video/{index}.jpg")
            assert (refused.status_code, refused.json()["code"]) == (status, code)
        assert http.get(f"/v1/jobs/{job['id']}/video/3.jpg").headers["content-type"] == (
            "image/jpeg"
        )
        http.delete(f"/v1/jobs/{job['id']}")
