"""A ``Track`` client: frames in, results out, with reconnection and resume.

    async with TrackClient("127.0.0.1:50051") as client:
        async for result in client.track(frames):      # frames: async iterable of SendFrame
            labels = result_labels(result)             # label map at the frame's size

The client keeps the frames it sent since the last result it received (up to ``keep``);
when the connection breaks (or the server restarts, or another replica takes over) it
reconnects with backoff, opens with its resume token and the last index it received,
resends what the server asks for, and goes on. Results come out once each, in order.
Errors the server answers are ``IsvosError`` with the code of the error table.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
from grpc._cython import cygrpc
from pycocotools import mask as mask_utils

from isvos.errors import ERRORS, IsvosError
from service.media.masks import encode_indexed_png
from service.rpc.gen import segmentation_pb2 as pb
from service.rpc.gen import segmentation_pb2_grpc as pb_grpc

# Transport failures after which the client reconnects and resumes.
RECONNECT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.INTERNAL}  # fmt: skip
MESSAGE_BYTES = 64 << 20


@dataclass
class SendFrame:
    index: int
    image: np.ndarray  # RGB uint8 [h, w, 3]
    masks: np.ndarray | None = None  # label map of new or corrected objects
    capture_time_us: int = 0
    remove: tuple[int, ...] = ()  # objects to forget before this frame
    encoding: str = "rgb"  # rgb | png | jpeg


def frame_request(frame: SendFrame) -> list[pb.TrackRequest]:
    requests = []
    if frame.remove:
        requests.append(pb.TrackRequest(remove_objects=pb.RemoveObjects(
            object_ids=list(frame.remove))))  # fmt: skip
    h, w = frame.image.shape[:2]
    image = pb.Image(width=w, height=h)
    if frame.encoding == "rgb":
        image.rgb = np.ascontiguousarray(frame.image, np.uint8).tobytes()
    else:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(frame.image).save(buffer, format=frame.encoding.upper(), quality=92)
        setattr(image, frame.encoding, buffer.getvalue())
    message = pb.Frame(index=frame.index, capture_time_us=frame.capture_time_us, image=image)
    if frame.masks is not None:
        message.masks.indexed_png = encode_indexed_png(frame.masks)
    requests.append(pb.TrackRequest(frame=message))
    return requests


def result_labels(result: pb.FrameResult) -> np.ndarray:
    """The label map of a result (RLE objects or an indexed PNG) at the frame's size."""
    if result.indexed_png:
        from service.media.masks import read_indexed_png

        return read_indexed_png(result.indexed_png)
    labels = np.zeros((result.height, result.width), np.uint8)
    for obj in result.objects:
        rle = {"size": [result.height, result.width], "counts": obj.rle_counts}
        labels[mask_utils.decode(rle).astype(bool)] = obj.object_id
    return labels


async def half_close(call) -> None:
    """``call.done_writing()``, tolerating a call the server has just ended: grpc then raises
    its internal ``ExecuteBatchError`` for the close; the call's own status tells the rest."""
    try:
        await call.done_writing()
    except cygrpc.ExecuteBatchError:
        pass


def error_of(exc: grpc.aio.AioRpcError) -> IsvosError:
    code = None
    for key, value in exc.trailing_metadata() or ():
        if key == "isvos-error-code":
            code = value
    if code not in ERRORS:
        code = "unavailable" if exc.code() in RECONNECT else "internal"
    return IsvosError(code, exc.details() or str(exc.code()))


class TrackClient:
    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        open_options: pb.Open | None = None,
        keep: int = 256,
        reconnect_s: float = 60.0,
    ) -> None:
        """``root_certificates`` (and a client key pair for mutual TLS) turn TLS on."""
        self.target = target
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.credentials = None
        if root_certificates is not None:
            self.credentials = grpc.ssl_channel_credentials(
                root_certificates, private_key, certificate_chain
            )
        self.open_options = open_options or pb.Open()
        self.keep = keep
        self.reconnect_s = reconnect_s
        self.channel = None
        self.session_id = ""
        self.reconnects = 0
        self.opened: pb.Opened | None = None

    async def __aenter__(self) -> TrackClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    def _stub(self) -> pb_grpc.SegmentationStub:
        if self.channel is None:
            options = [("grpc.max_receive_message_length", MESSAGE_BYTES),
                       ("grpc.max_send_message_length", MESSAGE_BYTES)]  # fmt: skip
            if self.credentials is not None:
                self.channel = grpc.aio.secure_channel(self.target, self.credentials, options)
            else:
                self.channel = grpc.aio.insecure_channel(self.target, options)
        return pb_grpc.SegmentationStub(self.channel)

    async def track(
        self, frames: AsyncIterable[SendFrame], *, close: bool = True
    ) -> AsyncIterator[pb.FrameResult]:
        """Results of ``frames``, one per processed frame, in order, across reconnects."""
        state = _State(frames.__aiter__(), self.keep)
        feeder = asyncio.create_task(state.feed())  # outlives connections: never cancelled
        try:  # while it awaits the caller's source
            async for result in self._connections(state, close):
                yield result
        finally:
            feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder

    async def _connections(self, state: _State, close: bool) -> AsyncIterator[pb.FrameResult]:
        delay, deadline = 0.2, None
        while True:
            call = self._stub().Track(metadata=self.metadata)
            writer = None
            try:
                request = pb.Open()
                request.CopyFrom(self.open_options)
                if self.session_id:
                    request.resume_token = self.session_id
                    request.last_received_index = state.last_received
                await call.write(pb.TrackRequest(open=request))
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    raise _Broken()
                self.opened = reply.opened
                resuming = bool(self.session_id)
                self.session_id = reply.opened.session_id
                resend = state.resend_after(reply.opened.resume_after_index) if resuming else []
                writer = asyncio.create_task(state.write(call, resend, close))
                while True:
                    reply = await call.read()
                    if reply is grpc.aio.EOF or reply.WhichOneof("response") == "closed":
                        await writer
                        return
                    result = reply.result
                    if result.index > state.last_received:
                        state.received(result.index)
                        delay, deadline = 0.2, None
                        yield result
            except (grpc.aio.AioRpcError, _Broken) as exc:
                if isinstance(exc, grpc.aio.AioRpcError):
                    error = error_of(exc)
                    if not (error.retryable or exc.code() in RECONNECT):
                        raise error from None
            finally:
                if writer is not None:
                    if not writer.done():
                        writer.cancel()
                    with contextlib.suppress(BaseException):
                        await writer  # also retrieves a failure of a finished writer
                call.cancel()
            # The connection broke (or the server went away): back off, then resume.
            now = asyncio.get_running_loop().time()
            deadline = deadline or now + self.reconnect_s
            if now > deadline:
                raise IsvosError("unavailable", f"no server at {self.target} to resume with")
            self.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            await self.close()  # a fresh channel: the old one may point at a dead server


class _State:
    """What a client sent and received, across connections."""

    def __init__(self, source, keep: int) -> None:
        self.source = source
        self.keep = keep
        self.queue: asyncio.Queue = asyncio.Queue(2)  # frames pulled from the source
        self.sent: deque[SendFrame] = deque()
        self.forgotten = -1  # the largest index dropped from ``sent``
        self.last_received = -1
        self.exhausted = False

    def received(self, index: int) -> None:
        self.last_received = index
        while len(self.sent) > self.keep or (self.sent and self.sent[0].index < index - self.keep):
            self.forgotten = max(self.forgotten, self.sent.popleft().index)

    def resend_after(self, index: int) -> list[SendFrame]:
        if self.forgotten > index:
            raise IsvosError(
                "failed_precondition",
                f"the server resumes after frame {index}, but frames up to {self.forgotten} "
                "are no longer kept; start a new stream",
            )
        return [f for f in self.sent if f.index > index]

    async def feed(self) -> None:
        async for frame in self.source:
            await self.queue.put(frame)
        await self.queue.put(None)

    async def write(self, call, resend: list[SendFrame], close: bool) -> None:
        for frame in resend:
            for request in frame_request(frame):
                await call.write(request)
        while not self.exhausted:
            frame = await self.queue.get()
            if frame is None:
                self.exhausted = True
                break
            self.sent.append(frame)
            for request in frame_request(frame):
                await call.write(request)
        if close:
            await call.write(pb.TrackRequest(close=pb.Close()))
        await half_close(call)


class _Broken(Exception):
    pass
