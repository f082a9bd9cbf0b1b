"""The per-session engine: one video, frame by frame, with a bounded memory bank.

Lifecycle: ``Engine.open_session`` -> ``Session.step(index, image, masks)`` for every frame
(masks on the first step, and on any later frame to add or correct objects) ->
``remove_objects`` as needed -> ``close``. ``Session.record()`` gives the exact record of
DESIGN decision 3 (``isvos.record``) and ``Engine.prime`` restores a session from it; the
``on_memorise`` hook hands each new slot to a caller that persists records incrementally.

Images are RGB uint8 [h, w, 3] already at the processing size (``isvos.processing``);
masks are {object id: bool [h, w]} at the same size. Steps carry the video's frame
indices: the first step may have any index, then each step is ``frame_stride`` after the
last; an index among the last ``replay_window`` answered ones returns the cached result,
any other is a gap (DESIGN decision 4).

Inference per frame (spec §4.2 pseudo-code): encode the frame; for each object group read
the memory and decode; soft-aggregate; merge user masks; argmax to a label map; memorise
the frame (first frame, frames with user masks, or ``mem_every`` frames after the last one)
with values encoded from the hard label map.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from isvos.allocator import keep_freed_memory
from isvos.config import MemoryOptions
from isvos.errors import IsvosError
from isvos.limits import MAX_OBJECT_ID, REPLAY_WINDOW
from isvos.model.memory_read import soft_aggregate
from isvos.processing import labels_from_probabilities, padded_size
from isvos.record import RecordHeader, SessionRecord, SlotInfo, SlotPayload

from .errors import FrameIndexError, ObjectError, RecordMismatchError, SessionStateError
from .memory_bank import MemoryBank
from .runner import Runner

# Called after a step memorised a frame: (the record header as of now, the new slot).
MemoriseHook = Callable[[RecordHeader, SlotPayload], None]


@dataclass
class StepResult:
    frame_index: int
    object_ids: list[int]
    # [1 + O, h, w] float32 at processing size, background first.
    probabilities: np.ndarray
    # [h, w] uint8 object ids at processing size.
    labels: np.ndarray
    memorised: bool


class Engine:
    """Owns the compute (a Runner) and opens sessions on it."""

    def __init__(
        self,
        runner: Runner,
        *,
        memory_dtype: torch.dtype | None = None,
        keep_memory: bool = True,
    ) -> None:
        """``keep_memory``: glibc keeps freed memory for the next step (``allocator``)."""
        if keep_memory:
            keep_freed_memory()
        self.runner = runner
        on_gpu = runner.device.type == "cuda"
        # DESIGN decision 6: fp16 memory bank on a GPU, the runner's dtype elsewhere.
        self.memory_dtype = memory_dtype or (torch.float16 if on_gpu else torch.float32)

    @property
    def config(self):
        return self.runner.config

    def open_session(
        self,
        processing_size: tuple[int, int],
        options: MemoryOptions | None = None,
        *,
        frame_stride: int = 1,
        on_memorise: MemoriseHook | None = None,
    ) -> Session:
        return Session(
            self, processing_size, options or MemoryOptions(), frame_stride=frame_stride,
            on_memorise=on_memorise,
        )  # fmt: skip

    def step_many(
        self, steps: list[tuple[Session, int, np.ndarray, dict[int, np.ndarray] | None]]
    ) -> list[StepResult | Exception]:
        """Step several sessions at once (cross-session batching on an inference server).

        The object-agnostic frame encoder runs once for all frames of the same size; the
        rest of each step runs per session. Each entry's result or error is returned in
        order; one session's error does not fail the others.
        """
        results: list[StepResult | Exception | None] = [None] * len(steps)
        pending: dict[tuple[int, int], list[int]] = {}
        for i, (session, frame_index, image, masks) in enumerate(steps):
            try:
                if session.replayed(frame_index):
                    results[i] = session.step(frame_index, image, masks)  # cached or closed
                    continue
                session.validate_step(frame_index, image, masks)
                if session.will_memorise(frame_index, masks):
                    # Memorised frames are encoded alone, exactly as re-priming encodes them,
                    # so a session primed from the record continues bit for bit.
                    results[i] = session.step(frame_index, image, masks)
                    continue
            except Exception as exc:  # reported per entry
                results[i] = exc
                continue
            pending.setdefault(image.shape[:2], []).append(i)
        for indices in pending.values():
            images = torch.cat([self.image_tensor(steps[i][2]) for i in indices])
            features = self.runner.encode_frame(images)
            for row, i in enumerate(indices):
                session, frame_index, image, masks = steps[i]
                own = tuple(f[row : row + 1] for f in features)
                try:
                    results[i] = session.step(frame_index, image, masks, features=own)
                except Exception as exc:
                    results[i] = exc
        return results  # type: ignore[return-value]

    def image_tensor(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 [h, w, 3] -> [1, 3, h, w] in [0, 1] on the runner's device and dtype."""
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.runner.device)
        return (x.permute(2, 0, 1)[None].to(self.runner.dtype) / 255.0).contiguous()

    def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The instance branch's proposals for one RGB uint8 frame [h, w, 3]: (object
        probability float32 [N], mask probabilities float16 [N, ceil(h/4), ceil(w/4)]).
        ``isvos.proposals`` turns them into ranked, non-overlapping masks."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise SessionStateError(
                f"images must be RGB uint8 [h, w, 3], got {image.dtype} {image.shape}"
            )
        h, w = image.shape[:2]
        objectness, logits = self.runner.propose(self.image_tensor(image))
        probabilities = logits[:, : -(-h // 4), : -(-w // 4)].float().sigmoid().half()
        return objectness.float().cpu().numpy(), probabilities.cpu().numpy()

    def check_record(self, header: RecordHeader) -> None:
        """``record_mismatch`` unless ``header`` was made with this engine's weights."""
        config = self.runner.config
        try:
            header.check_compatible(config.architecture_hash(), self.runner.model_hash,
                                    config.name)  # fmt: skip
        except IsvosError as exc:
            raise RecordMismatchError(exc.message) from None

    def prime(
        self,
        record: SessionRecord,
        *,
        resume_index: int | None = None,
        on_memorise: MemoriseHook | None = None,
    ) -> Session:
        """A new session restored from ``record`` (refuses another checkpoint or config).

        ``resume_index``: the next frame to expect, when it is later than the record's (the
        frames in between were stepped without being memorised, which changes nothing)."""
        header = record.header
        self.check_record(header)
        header.validate_resume(resume_index)
        session = Session(
            self, header.processing_size, header.memory_options(),
            frame_stride=header.frame_stride, on_memorise=on_memorise,
        )  # fmt: skip
        session._restore(record)
        if resume_index is not None:
            session.next_frame_index = resume_index
        return session


class Session:
    def __init__(
        self,
        engine: Engine,
        processing_size: tuple[int, int],
        options: MemoryOptions,
        *,
        frame_stride: int = 1,
        replay_window: int = REPLAY_WINDOW,
        on_memorise: MemoriseHook | None = None,
    ) -> None:
        if frame_stride < 1:
            raise SessionStateError("frame_stride must be at least 1", "invalid_argument")
        self.engine = engine
        self.runner = engine.runner
        self.options = options
        self.frame_stride = int(frame_stride)
        self.replay_window = max(1, int(replay_window))
        self.on_memorise = on_memorise
        self.processing_size = (int(processing_size[0]), int(processing_size[1]))
        config = self.runner.config
        self.padded_size = padded_size(self.processing_size, config.size_divisibility)
        padded_h, padded_w = self.padded_size
        self.bank = MemoryBank(
            capacity=options.max_memory_frames,
            key_dim=config.key_dim,
            value_dim=config.value_dim,
            height=padded_h // 16,
            width=padded_w // 16,
            device=self.runner.device,
            dtype=engine.memory_dtype,
        )
        self.object_ids: list[int] = []
        self.object_start_frames: dict[int, int] = {}
        self.removed_objects: list[int] = []
        self.next_frame_index: int | None = None  # None until the first step
        self.last_memorised_index = -1
        # The last ``replay_window`` results, by frame index (replayed on a repeat).
        self.recent: OrderedDict[int, StepResult] = OrderedDict()
        # Frames and label maps of the memorised slots, for the record.
        self._slot_data: dict[int, SlotPayload] = {}
        self.closed = False

    # ------------------------------------------------------------------ public API

    @property
    def last_result(self) -> StepResult | None:
        return next(reversed(self.recent.values())) if self.recent else None

    def replayed(self, frame_index: int) -> bool:
        """True when ``frame_index`` is among the recent steps (its cached result returns)."""
        return frame_index in self.recent

    def validate_step(
        self, frame_index: int, image: np.ndarray, masks: dict[int, np.ndarray] | None
    ) -> None:
        """Raise the error a step with these arguments would raise, without computing."""
        if self.closed:
            raise SessionStateError("session is closed")
        if self.next_frame_index is None:
            if frame_index < 0:
                raise FrameIndexError(f"frame index {frame_index} is negative")
            if not masks:
                raise SessionStateError("the first step of a session needs at least one mask")
        elif frame_index != self.next_frame_index:
            again = f" (or one of {list(self.recent)} again)" if self.recent else ""
            raise FrameIndexError(
                f"frame {frame_index} out of order: expected {self.next_frame_index}{again}"
            )
        self._check_image(image)
        self._check_masks(masks or {})

    def will_memorise(self, frame_index: int, masks: dict[int, np.ndarray] | None) -> bool:
        """The memorisation rule (spec §1.8): first frame, user masks, or ``mem_every`` on.

        A session whose objects were all removed memorises nothing until new masks come."""
        if not masks and not self.object_ids:
            return False
        return bool(masks) or (
            self.last_memorised_index < 0
            or frame_index - self.last_memorised_index >= self.options.mem_every * self.frame_stride
        )

    def step(
        self,
        frame_index: int,
        image: np.ndarray,
        masks: dict[int, np.ndarray] | None = None,
        *,
        features=None,
    ) -> StepResult:
        """Segment frame ``frame_index``; ``masks`` add new objects or correct existing ones.

        ``features`` lets a caller pass this frame's encoder output computed in a batch.
        """
        if self.replayed(frame_index) and not self.closed:
            return self.recent[frame_index]
        self.validate_step(frame_index, image, masks)
        masks = masks or {}
        memorise = self.will_memorise(frame_index, masks)
        x = self.engine.image_tensor(image)
        if features is None:
            features = self.runner.encode_frame(x)
        probabilities = self._predict(features)
        added = [o for o in masks if o not in self.object_ids]
        for object_id in added:
            self._add_object(object_id, frame_index)
        try:
            if masks:
                probabilities = self._merge_masks(probabilities, masks)
            probs_np = probabilities.float().cpu().numpy()
            labels = labels_from_probabilities(probs_np, self.object_ids)
            if memorise:
                key = features[0][0]
                first = self.last_memorised_index < 0
                self._memorise(
                    frame_index, image, labels, x, features[1], key, tuple(masks), first=first
                )
        except Exception:
            for object_id in added:  # a failed step leaves the session as it was
                self._drop_object(object_id)
            raise
        self.next_frame_index = frame_index + self.frame_stride
        result = StepResult(frame_index, list(self.object_ids), probs_np, labels, memorise)
        self.recent[frame_index] = result
        while len(self.recent) > self.replay_window:
            self.recent.popitem(last=False)
        if memorise and self.on_memorise is not None:
            self.on_memorise(self.header(), self._slot_data[frame_index])
        return result

    def remove_objects(self, object_ids: list[int]) -> None:
        """Forget objects; later steps no longer predict them (the last result stays cached)."""
        if self.closed:
            raise SessionStateError("session is closed")
        object_ids = list(dict.fromkeys(int(o) for o in object_ids))
        unknown = [o for o in object_ids if o not in self.object_ids]
        if unknown:
            raise ObjectError(f"unknown objects {unknown}; the session has {self.object_ids}")
        for object_id in object_ids:
            self._drop_object(object_id)
            self.removed_objects.append(object_id)

    def close(self) -> None:
        self.closed = True
        self.bank = None  # type: ignore[assignment]
        self._slot_data.clear()

    def memory_bytes(self) -> int:
        return self.bank.nbytes()

    def header(self) -> RecordHeader:
        """The record's header as of now (small: no pixels)."""
        if self.closed:
            raise SessionStateError("session is closed")
        config = self.runner.config
        return RecordHeader(
            config_name=config.name,
            architecture_hash=config.architecture_hash(),
            model_hash=self.runner.model_hash,
            options=self.options.to_dict(),
            processing_size=self.processing_size,
            frame_stride=self.frame_stride,
            next_frame_index=self.next_frame_index,
            last_memorised_index=self.last_memorised_index,
            object_ids=list(self.object_ids),
            object_start_frames=dict(self.object_start_frames),
            anchors=dict(self.bank.anchors),
            removed_objects=list(self.removed_objects),
            slots=[
                SlotInfo(s.frame_index, tuple(s.encoded_objects), s.first)
                for _, s in self.bank.ordered_slots()
            ],
        )

    def record(self) -> SessionRecord:
        header = self.header()
        return SessionRecord(header, {s.frame_index: self._slot_data[s.frame_index]
                                      for s in header.slots})  # fmt: skip

    # ------------------------------------------------------------------ internals

    def _check_image(self, image: np.ndarray) -> None:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise SessionStateError(
                f"frames must be RGB uint8 [h, w, 3], got {image.dtype} {image.shape}"
            )
        if image.shape[:2] != self.processing_size:
            raise SessionStateError(
                f"frame is {image.shape[1]}x{image.shape[0]}, the session processes "
                f"{self.processing_size[1]}x{self.processing_size[0]}"
            )

    def _check_masks(self, masks: dict[int, np.ndarray]) -> None:
        new = [o for o in masks if o not in self.object_ids]
        if len(self.object_ids) + len(new) > self.options.max_objects:
            raise ObjectError(
                f"{len(self.object_ids) + len(new)} objects exceed the session limit "
                f"of {self.options.max_objects}"
            )
        for object_id, mask in masks.items():
            if not 1 <= int(object_id) <= MAX_OBJECT_ID:
                raise ObjectError(f"object id {object_id} is outside 1..{MAX_OBJECT_ID}")
            if object_id in self.removed_objects:
                raise ObjectError(f"object {object_id} was removed; use a new id")
            if mask.shape != self.processing_size:
                raise ObjectError(
                    f"mask of object {object_id} is {mask.shape}, expected {self.processing_size}"
                )
            if not mask.any():
                raise ObjectError(f"mask of object {object_id} is empty")

    def _predict(self, features) -> torch.Tensor:
        """[1 + O, h, w] soft-aggregated probabilities (background only without memory)."""
        h, w = self.processing_size
        device = self.runner.device
        if not self.object_ids:
            return torch.ones(1, h, w, device=device)
        per_object: dict[int, torch.Tensor] = {}
        for objects, positions in self.bank.groups(self.object_ids):
            keys, values = self.bank.gather(objects, positions)
            logits = self.runner.read_decode(
                features, keys, values, self.options.top_k, self.options.affinity_chunk
            )
            logits = F.interpolate(
                logits[None].float(), size=self.padded_size, mode="bilinear", align_corners=False
            )[0, :, :h, :w]
            for i, object_id in enumerate(objects):
                per_object[object_id] = torch.sigmoid(logits[i])
        # Objects without values yet (cannot happen after their first frame) get zeros.
        stacked = torch.stack(
            [per_object.get(o, torch.zeros(h, w, device=device)) for o in self.object_ids]
        )
        return soft_aggregate(stacked)

    def _merge_masks(
        self, probabilities: torch.Tensor, masks: dict[int, np.ndarray]
    ) -> torch.Tensor:
        """User masks override the prediction in their region (XMem/STCN style)."""
        device = probabilities.device
        h, w = self.processing_size
        objects = probabilities[1:]
        if objects.shape[0] < len(self.object_ids):  # newly added objects
            extra = len(self.object_ids) - objects.shape[0]
            objects = torch.cat([objects, torch.zeros(extra, h, w, device=device)], 0)
        given = torch.zeros(h, w, dtype=torch.bool, device=device)
        for mask in masks.values():
            given |= torch.from_numpy(mask.astype(bool)).to(device)
        objects = objects.masked_fill(given[None], 0.0)
        for object_id, mask in masks.items():
            index = self.object_ids.index(object_id)
            objects[index] = torch.from_numpy(mask.astype(np.float32)).to(device)
        return soft_aggregate(objects.clamp(0.0, 1.0))

    def _add_object(self, object_id: int, frame_index: int) -> None:
        self.object_ids.append(object_id)
        self.object_start_frames[object_id] = frame_index
        self.bank.add_object(object_id)

    def _drop_object(self, object_id: int) -> None:
        self.object_ids.remove(object_id)
        self.object_start_frames.pop(object_id, None)
        self.bank.remove_object(object_id)

    def _memorise(
        self,
        frame_index: int,
        image: np.ndarray,
        labels: np.ndarray,
        x: torch.Tensor,
        f16: torch.Tensor,
        key: torch.Tensor,
        anchor_objects: tuple[int, ...],
        *,
        first: bool,
        encoded_objects: tuple[int, ...] | None = None,
    ) -> None:
        """Encode values from the hard label map and insert the frame into the bank."""
        encoded = encoded_objects if encoded_objects is not None else tuple(self.object_ids)
        labels_t = torch.from_numpy(labels).to(x.device)
        masks = torch.stack([labels_t == o for o in encoded]).to(x.dtype)
        foreground = (labels_t > 0).to(x.dtype)
        values = self.runner.encode_value(x, masks, foreground, f16)
        live = {o: values[i] for i, o in enumerate(encoded) if o in self.object_ids}
        self.bank.insert(
            frame_index,
            key,
            live,
            encoded_objects=encoded,
            first=first,
            anchor_objects=anchor_objects,
            max_pins=self.options.pin_cap,
        )
        self.last_memorised_index = frame_index
        self._slot_data[frame_index] = SlotPayload(frame_index, image.copy(), labels.copy())
        kept = {s.frame_index for s in self.bank.slots if s is not None}
        for stale in [f for f in self._slot_data if f not in kept]:
            del self._slot_data[stale]

    def _restore(self, record: SessionRecord) -> None:
        header = record.header
        self.object_ids = list(header.object_ids)
        self.object_start_frames = dict(header.object_start_frames)
        self.removed_objects = list(header.removed_objects)
        for object_id in self.object_ids:
            self.bank.add_object(object_id)
        for slot, payload in sorted(record.slots(), key=lambda item: item[0].frame_index):
            x = self.engine.image_tensor(payload.image)
            features = self.runner.encode_frame(x)
            self._memorise(
                slot.frame_index,
                payload.image,
                payload.labels,
                x,
                features[1],
                features[0][0],
                anchor_objects=(),
                first=slot.first,
                encoded_objects=slot.encoded_objects,
            )
        self.bank.anchors = dict(header.anchors)
        self.next_frame_index = header.next_frame_index
        self.last_memorised_index = header.last_memorised_index
