"""A Python client of the job service: ``submit``, ``wait`` (with progress), ``download``.

``AsyncClient`` (httpx, asyncio) does the work; ``Client`` runs it on an event loop of its
own for code that is not async. Errors are ``IsvosError`` with the service's code, so
callers branch on ``error.code`` / ``error.retryable``, never on message text.

Retries: a request that cannot reach the gateway (connection refused or broken) or is
answered with a retryable code (503 ``unavailable`` while Redis restarts, 429
``rate_limited``, ...) is sent again after the answer's ``Retry-After`` (else a growing
backoff) for up to ``retry_s`` seconds. ``submit`` sends an ``Idempotency-Key`` (its own
when the caller gives none), so a retried submission never makes a second job.

    with Client("http://127.0.0.1:8080") as client:
        job = client.submit("video.mp4", ["first.png"], {"outputs": ["png_zip"]})
        client.wait(job["id"], progress=print)
        client.download(job["id"], "out", ["png_zip"])
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx

from isvos.errors import ERRORS, IsvosError

TERMINAL = ("succeeded", "failed", "cancelled")
TUS_CHUNK = 8 << 20
MAX_RETRY_WAIT_S = 10.0


def _error(response: httpx.Response) -> IsvosError:
    try:
        body = response.json()
        code, message = body.get("code", "internal"), body.get("message", "")
    except ValueError:
        code, message = "internal", response.text[:500]
    if code not in ERRORS:
        code = "internal"
    return IsvosError(code, message or f"HTTP {response.status_code}")


class AsyncClient:
    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60,
                 retry_s: float = 60) -> None:  # fmt: skip
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                      timeout=timeout)  # fmt: skip
        self.retry_s = retry_s
        self.retries = 0  # requests sent again, over the client's life

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            await response.aread()
            raise _error(response)
        return response

    async def _retrying(self, send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        """``send()``'s answer, sent again while the gateway is unreachable or answers a
        retryable code, for up to ``retry_s`` seconds; errors as ``IsvosError``."""
        loop = asyncio.get_running_loop()
        deadline, backoff = loop.time() + self.retry_s, 0.2
        while True:
            try:
                response = await send()
            except httpx.TransportError as exc:
                error = IsvosError("unavailable", f"the gateway cannot be reached: {exc!r}")
                wait = backoff
            else:
                if response.status_code < 400:
                    return response
                error = _error(response)
                if not error.retryable:
                    raise error
                wait = _retry_after(response, backoff)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise error
            self.retries += 1
            await asyncio.sleep(min(wait, remaining))
            backoff = min(backoff * 2, 2.0)

    async def _pause_after(self, exc: Exception, failing_since: float, what: str) -> None:
        """After a failure of a long call (events, an upload): raise it when a retry cannot
        mend it or the failures have lasted ``retry_s``, else pause before it goes on."""
        if isinstance(exc, IsvosError) and not exc.retryable:
            raise exc
        if asyncio.get_running_loop().time() - failing_since > self.retry_s:
            raise IsvosError("unavailable", f"{what} for {self.retry_s:g} s: {exc}") from None
        self.retries += 1
        await asyncio.sleep(0.5)

    async def _call(self, method: str, url: str, **kwargs) -> httpx.Response:
        return await self._retrying(lambda: self.http.request(method, url, **kwargs))

    # ------------------------------------------------------------------ jobs

    async def submit(
        self,
        video: str | Path | None,
        masks: list[str | Path],
        options: dict | None = None,
        *,
        upload_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict:
        """Create a job from a video file (or a finished upload) and its mask files."""
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        data = {"options": json.dumps(options or {})}
        if upload_id:
            data["upload_id"] = upload_id

        async def send() -> httpx.Response:  # files opened again for every try
            with contextlib.ExitStack() as files_open:
                files = [(field, (Path(path).name, files_open.enter_context(open(path, "rb"))))
                         for field, path in [*([("video", video)] if video is not None else []),
                                             *(("masks", mask) for mask in masks)]]  # fmt: skip
                return await self.http.post("/v1/jobs", files=files, data=data, headers=headers)

        return (await self._retrying(send)).json()

    async def get(self, job_id: str) -> dict:
        return (await self._call("GET", f"/v1/jobs/{job_id}")).json()

    async def list(self, status: str | None = None, limit: int = 50) -> list[dict]:
        params = {"limit": limit, **({"status": status} if status else {})}
        return (await self._call("GET", "/v1/jobs", params=params)).json()["jobs"]

    async def delete(self, job_id: str) -> None:
        await self._call("DELETE", f"/v1/jobs/{job_id}")

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[dict]:
        """The job's events (``type``, ``id`` and the event's fields) until its final status;
        reconnects after a dropped connection (or a retryable answer) and resumes with
        ``Last-Event-ID``, for up to ``retry_s`` seconds without an event."""
        last = last_event_id
        failing_since: float | None = None  # the first of the failures since the last event
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                async with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                            timeout=None) as response:  # fmt: skip
                    await self._check(response)
                    async for event in _sse(response):
                        last, failing_since = event["id"], None
                        yield event
                        if event.get("type") == "status" and event.get("status") in TERMINAL:
                            return
            except (httpx.TransportError, IsvosError) as exc:
                failing_since = failing_since or asyncio.get_running_loop().time()
                await self._pause_after(exc, failing_since, "the job's events failed")

    async def wait(self, job_id: str, progress: Callable[[dict], None] | None = None) -> dict:
        """Follow the job's events until it ends; returns the final job."""
        async for event in self.events(job_id):
            if progress is not None and event.get("type") == "progress":
                progress(event)
        return await self.get(job_id)

    async def frame(self, job_id: str, index: int) -> bytes:
        return (await self._call("GET", f"/v1/jobs/{job_id}/frames/{index}.png")).content

    async def result(self, job_id: str, fmt: str) -> bytes:
        return (await self._call("GET", f"/v1/jobs/{job_id}/result",
                                 params={"format": fmt})).content  # fmt: skip

    async def download(self, job_id: str, out_dir: str | Path, formats: list[str]) -> None:
        """Write the files ``isvos segment`` writes: ``masks/00000.png ...`` (png_zip),
        ``masks.json`` (rle_json), ``overlay.mp4``, ``preview.png``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        names = {"rle_json": "masks.json", "overlay_mp4": "overlay.mp4",
                 "preview_png": "preview.png"}  # fmt: skip
        for fmt in formats:
            data = await self.result(job_id, fmt)
            if fmt == "png_zip":
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    for member in archive.namelist():
                        name = Path(member).name
                        if member.startswith("masks/") and name.endswith(".png"):
                            (out / "masks").mkdir(exist_ok=True)
                            (out / "masks" / name).write_bytes(archive.read(member))
            else:
                (out / names[fmt]).write_bytes(data)

    # ------------------------------------------------------------------ resumable upload

    async def upload(self, video: str | Path, upload_url: str | None = None) -> str:
        """Upload ``video`` with the tus protocol; pass the ``upload_url`` of an interrupted
        upload to resume it. Returns the upload id for ``submit(upload_id=...)``."""
        path = Path(video)
        size = path.stat().st_size
        tus = {"Tus-Resumable": "1.0.0"}
        if upload_url is None:
            response = await self._call("POST", "/v1/uploads",
                                        headers={**tus, "Upload-Length": str(size)})  # fmt: skip
            upload_url = response.headers["Location"]

        async def server_offset() -> int:
            head = await self._call("HEAD", upload_url, headers=tus)
            return int(head.headers["Upload-Offset"])

        offset = await server_offset()
        failing_since: float | None = None  # the first of the failures since the last progress
        with open(path, "rb") as source:
            while offset < size:
                source.seek(offset)
                chunk = source.read(TUS_CHUNK)
                headers = {**tus, "Upload-Offset": str(offset),
                           "Content-Type": "application/offset+octet-stream"}  # fmt: skip
                try:
                    response = await self._check(
                        await self.http.patch(upload_url, content=chunk, headers=headers)
                    )
                    stored = int(response.headers["Upload-Offset"])
                    if stored > offset:
                        failing_since = None
                    offset = stored
                except (httpx.TransportError, IsvosError) as exc:
                    # A chunk that failed may have been stored in part: go on from where the
                    # server stands.
                    failing_since = failing_since or asyncio.get_running_loop().time()
                    await self._pause_after(exc, failing_since, "the upload failed")
                    offset = await server_offset()
        return upload_url.rstrip("/").rsplit("/", 1)[-1]


async def _sse(response: httpx.Response) -> AsyncIterator[dict]:
    """Server-sent events of a streamed response as dicts (``id``, ``type`` + data fields)."""
    event: dict = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                fields = json.loads("\n".join(data))
                fields.setdefault("type", event.get("event", "message"))
                yield {"id": event.get("id"), **fields}
            event, data = {}, []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "data":
            data.append(value)
        else:
            event[key] = value


class Client:
    """``AsyncClient``'s calls, blocking (an event loop of its own)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60,
                 retry_s: float = 60) -> None:  # fmt: skip
        self._loop = asyncio.new_event_loop()
        self._client = self._loop.run_until_complete(_make(base_url, api_key, timeout, retry_s))

    def _run(self, coroutine):
        return self._loop.run_until_complete(coroutine)

    @property
    def retries(self) -> int:
        return self._client.retries

    def submit(self, video, masks, options=None, **kwargs) -> dict:
        return self._run(self._client.submit(video, masks, options, **kwargs))

    def get(self, job_id: str) -> dict:
        return self._run(self._client.get(job_id))

    def list(self, status: str | None = None, limit: int = 50) -> list[dict]:
        return self._run(self._client.list(status, limit))

    def delete(self, job_id: str) -> None:
        self._run(self._client.delete(job_id))

    def wait(self, job_id: str, progress=None) -> dict:
        return self._run(self._client.wait(job_id, progress))

    def frame(self, job_id: str, index: int) -> bytes:
        return self._run(self._client.frame(job_id, index))

    def result(self, job_id: str, fmt: str) -> bytes:
        return self._run(self._client.result(job_id, fmt))

    def download(self, job_id: str, out_dir, formats: list[str]) -> None:
        self._run(self._client.download(job_id, out_dir, formats))

    def upload(self, video, upload_url: str | None = None) -> str:
        return self._run(self._client.upload(video, upload_url))

    def close(self) -> None:
        self._run(self._client.aclose())
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def _make(base_url: str, api_key: str | None, timeout: float,
                retry_s: float) -> AsyncClient:  # fmt: skip
    return AsyncClient(base_url, api_key=api_key, timeout=timeout, retry_s=retry_s)


def _retry_after(response: httpx.Response, default: float) -> float:
    """The answer's ``Retry-After`` in seconds (bounded), else ``default``."""
    try:
        return min(max(float(response.headers["Retry-After"]), 0.0), MAX_RETRY_WAIT_S)
    except (KeyError, ValueError):
        return default
