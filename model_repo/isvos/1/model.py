"""Triton python-backend adapter over ``isvos.engine`` (DESIGN decisions 1, 4, 5).

A thin layer: it decodes requests, keeps one engine ``Session`` per sequence correlation id
(``"<session id>:<epoch>"``), and encodes results. Everything about segmentation (memory
policy, records, errors) is the engine's. The contract is ``service/triton_contract.py``.

- START creates (or resets) the sequence's session; END frees it. Sessions idle longer than
  ``session_ttl_seconds`` are freed by the model itself (Triton tells it nothing).
- Admission control at open / prime: processing size, object count, live sessions and the
  memory-bank byte budget (spec 4.1 formula) are checked before a session is created;
  refusals are ``resource_exhausted`` errors, never a silent backlog.
- The Oldest sequence batcher hands several sessions' requests to one ``execute()``; their
  steps go through ``Engine.step_many`` (one frame-encoder call for the batch).
- Every error is a response ``"<code>: <message>"``; nothing a client sends crashes the model.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from isvos.processing import masks_from_labels
from service import triton_contract as C

START = 1
END = 2
GIB = 1 << 30
METRICS_PERIOD_S = 1.0


class Refusal(Exception):
    """A request refused with a contract error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Entry:
    session: object  # isvos.engine.Session
    reserved_bytes: int
    attach_record: str  # "", "skeleton" or "full"
    opened_at: float
    last_used: float = field(default_factory=time.monotonic)


def _log(level: str, message: str) -> None:
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        getattr(logger, f"log_{level}", logger.log_info)(message)
    else:  # pragma: no cover - older backends
        print(f"[isvos] {message}", flush=True)


class TritonPythonModel:
    # ------------------------------------------------------------------ lifecycle

    def initialize(self, args: dict) -> None:
        import torch

        from isvos.engine import Engine, ScriptedRunner

        self.model_config = json.loads(args["model_config"])
        raw = {
            k: v.get("string_value", "") for k, v in self.model_config.get("parameters", {}).items()
        }
        params = {**C.PARAMETER_DEFAULTS, **raw}
        on_gpu = args.get("model_instance_kind") == "GPU"
        device = f"cuda:{args.get('model_instance_device_id', 0)}" if on_gpu else "cpu"
        threads = int(params[C.P_TORCH_THREADS])
        if threads > 0:
            torch.set_num_threads(threads)
        folder = Path(args["model_repository"]) / str(args["model_version"])
        if not (folder / "manifest.json").exists():
            folder = Path(__file__).resolve().parent
        self.runner = ScriptedRunner(folder, device=device)
        dtype_name = params[C.P_MEMORY_DTYPE]
        memory_dtype = None if dtype_name == "auto" else getattr(torch, dtype_name)
        self.engine = Engine(self.runner, memory_dtype=memory_dtype)
        self.element_size = torch.empty((), dtype=self.engine.memory_dtype).element_size()
        budget = params[C.P_MEMORY_BUDGET]
        if budget == "auto":
            if on_gpu:
                total = torch.cuda.get_device_properties(torch.device(device)).total_memory
                budget = int(total * 0.6)
            else:
                budget = 4 * GIB
        self.budget = int(budget)
        self.ttl = float(params[C.P_SESSION_TTL])
        self.max_sessions = int(params[C.P_MAX_SESSIONS])
        self.max_objects = int(params[C.P_MAX_OBJECTS])
        self.max_side = int(params[C.P_MAX_SIDE])
        self.instance = args.get("model_instance_name", C.MODEL_NAME)
        self.device = device
        self.sessions: dict[str, Entry] = {}
        self.lock = threading.RLock()
        self.counters: Counter = Counter()
        self.refusals: Counter = Counter()
        self.errors: Counter = Counter()
        self.batch_sizes: Counter = Counter()
        self.step_batch_sizes: Counter = Counter()
        self._metrics = self._init_metrics()
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="isvos-ttl", daemon=True)
        self._sweeper.start()
        _log(
            "info",
            f"isvos: {self.runner.config.name} ({self.runner.model_hash}) on {device}, "
            f"budget {self.budget} B, ttl {self.ttl} s, max {self.max_sessions} sessions",
        )

    def finalize(self) -> None:
        self._stop.set()
        with self.lock:
            for entry in self.sessions.values():
                entry.session.close()
            self.sessions.clear()

    # ------------------------------------------------------------------ execute

    def execute(self, requests):
        with self.lock:
            self._sweep()
            self.counters["executes"] += 1
            self.counters["requests"] += len(requests)
            self.batch_sizes[len(requests)] += 1
            responses = [None] * len(requests)
            pending: list[tuple[int, str, Entry, int, np.ndarray, dict | None]] = []
            for i, request in enumerate(requests):
                try:
                    corr = self._correlation_id(request)
                    if corr is None:  # a null request of the Direct strategy
                        responses[i] = self._info_response({"null": True})
                        continue
                    flags = request.flags()
                    kind = self._kind(request)
                    if kind == C.STEP and not flags & (START | END):
                        entry = self._entry(corr)
                        args = self._step_args(request)
                        if any(p[1] == corr for p in pending):  # same session twice: keep order
                            self._flush(pending, responses)
                        pending.append((i, corr, entry, *args))
                        continue
                    if any(p[1] == corr for p in pending):
                        self._flush(pending, responses)
                    if flags & START:
                        self._free(corr)
                    try:
                        responses[i] = self._handle(kind, request, corr, flags)
                    finally:
                        if flags & END:
                            self._free(corr, closed=True)
                except Exception as exc:  # noqa: BLE001 - every error becomes a response
                    responses[i] = self._error_response(exc)
            self._flush(pending, responses)
            return responses

    def _flush(self, pending: list, responses: list) -> None:
        if not pending:
            return
        self.step_batch_sizes[len(pending)] += 1
        steps = [
            (entry.session, index, image, masks) for _, _, entry, index, image, masks in pending
        ]
        replayed = [entry.session.replayed(index) for _, _, entry, index, _, _ in pending]
        started = time.perf_counter()
        results = self.engine.step_many(steps)
        compute_ms = round((time.perf_counter() - started) * 1e3, 2)
        for (i, _corr, entry, _index, _image, _masks), result, again in zip(
            pending, results, replayed, strict=True
        ):
            entry.last_used = time.monotonic()
            if isinstance(result, Exception):
                responses[i] = self._error_response(result)
            else:
                extra = {"compute_ms": compute_ms, "batch": len(pending)}
                responses[i] = self._step_response(entry, result, again, extra=extra)
        pending.clear()

    # ------------------------------------------------------------------ request kinds

    def _handle(self, kind: str, request, corr: str, flags: int):
        if kind == C.OPEN:
            return self._open(request, corr, flags)
        if kind == C.PRIME:
            return self._prime(request, corr, flags)
        if kind == C.STEP:
            entry = self._entry(corr)
            index, image, masks = self._step_args(request)
            again = entry.session.replayed(index)
            started = time.perf_counter()
            result = entry.session.step(index, image, masks)
            compute_ms = round((time.perf_counter() - started) * 1e3, 2)
            entry.last_used = time.monotonic()
            self.step_batch_sizes[1] += 1
            extra = {"compute_ms": compute_ms, "batch": 1}
            return self._step_response(entry, result, again, extra=extra)
        if kind == C.REMOVE:
            entry = self._entry(corr)
            ids = self._int_list(request, C.OBJECT_IDS, required=True)
            entry.session.remove_objects(ids)
            entry.last_used = time.monotonic()
            info = {"kind": kind, "object_ids": list(entry.session.object_ids)}
            return self._info_response(info, self._attached_record(entry, info))
        if kind == C.RECORD_KIND:
            entry = self._entry(corr)
            entry.last_used = time.monotonic()
            data = entry.session.record().to_bytes()
            return self._info_response({"kind": kind, "bytes": len(data)}, data)
        if kind == C.CLOSE:
            existed = self._free(corr, closed=True)
            return self._info_response({"kind": kind, "closed": existed})
        if kind == C.STATS:
            return self._info_response(self.stats())
        raise Refusal(C.INVALID_ARGUMENT, f"unknown request kind {kind!r}")

    def _open(self, request, corr: str, flags: int):
        from isvos.config import MemoryOptions

        if not flags & START:
            raise Refusal(C.INVALID_ARGUMENT, "open must start a sequence (sequence_start)")
        options, attach = self._options(request)
        try:
            memory = MemoryOptions.from_dict(options)
        except (TypeError, ValueError) as exc:
            raise Refusal(C.INVALID_ARGUMENT, f"bad options: {exc}") from exc
        image = self._array(request, C.IMAGE, np.uint8, ndim=3)
        size = self._int_list(request, C.PROCESSING_SIZE)
        if image is not None:
            if image.shape[2] != 3:
                raise Refusal(C.INVALID_ARGUMENT, f"IMAGE must be [h, w, 3], got {image.shape}")
            size = list(image.shape[:2])
        if size is None or len(size) != 2:
            raise Refusal(C.INVALID_ARGUMENT, "open needs PROCESSING_SIZE (h, w) or IMAGE")
        size = (int(size[0]), int(size[1]))
        reserved = self._admit(size, memory)
        entry = Entry(self.engine.open_session(size, memory), reserved, attach, time.monotonic())
        self.sessions[corr] = entry
        self.counters["opens"] += 1
        info = {"kind": C.OPEN, "processing_size": list(size), "reserved_bytes": reserved}
        if image is None:
            return self._info_response(info)
        index = self._int_scalar(request, C.FRAME_INDEX, default=0)
        masks = self._masks(request)
        try:
            result = entry.session.step(index, image, masks)
        except Exception:
            self._free(corr)
            raise
        self.step_batch_sizes[1] += 1
        return self._step_response(entry, result, False, extra=info)

    def _prime(self, request, corr: str, flags: int):
        from isvos.engine import SessionRecord

        if not flags & START:
            raise Refusal(C.INVALID_ARGUMENT, "prime must start a sequence (sequence_start)")
        data = self._bytes(request, C.RECORD)
        if data is None:
            raise Refusal(C.INVALID_ARGUMENT, "prime needs RECORD")
        try:
            record = SessionRecord.from_bytes(data)
        except (ValueError, KeyError) as exc:
            raise Refusal(C.INVALID_ARGUMENT, f"RECORD is not a session record: {exc}") from exc
        _, attach = self._options(request)
        from isvos.config import MemoryOptions

        try:
            memory = MemoryOptions.from_dict(record.options)
        except (TypeError, ValueError) as exc:
            raise Refusal(C.RECORD_MISMATCH, f"record options: {exc}") from exc
        size = tuple(int(v) for v in record.processing_size)
        resume = self._int_scalar(request, C.FRAME_INDEX, default=None)
        if resume is not None and resume < record.next_frame_index:
            raise Refusal(
                C.INVALID_ARGUMENT,
                f"FRAME_INDEX {resume} is before the record's next frame {record.next_frame_index}",
            )
        reserved = self._admit(size, memory)
        session = self.engine.prime(record)
        if resume is not None:
            session.next_frame_index = resume
        self.sessions[corr] = Entry(session, reserved, attach, time.monotonic())
        self.counters["re_primes"] += 1
        info = {
            "kind": C.PRIME,
            "next_frame_index": session.next_frame_index,
            "object_ids": list(session.object_ids),
            "reserved_bytes": reserved,
        }
        return self._info_response(info)

    # ------------------------------------------------------------------ admission

    def _admit(self, size: tuple[int, int], memory) -> int:
        from isvos.engine import bank_bytes
        from isvos.processing import MIN_PROCESSING_SIDE, padded_size

        if min(size) < MIN_PROCESSING_SIDE:
            raise Refusal(
                C.INVALID_ARGUMENT,
                f"processing size {size[1]}x{size[0]} is below {MIN_PROCESSING_SIDE} px",
            )
        if max(size) > self.max_side:
            self._refuse(
                "size",
                f"processing size {size[1]}x{size[0]} exceeds the longest side of "
                f"{self.max_side} px this server accepts",
            )
        if memory.max_objects > self.max_objects:
            self._refuse(
                "objects",
                f"max_objects {memory.max_objects} exceeds this server's limit of "
                f"{self.max_objects}",
            )
        if len(self.sessions) >= self.max_sessions:
            self._refuse(
                "sessions", f"{len(self.sessions)} live sessions, the limit of this instance"
            )
        config = self.runner.config
        padded = padded_size(size, config.size_divisibility)
        need = bank_bytes(
            capacity=memory.max_memory_frames, key_dim=config.key_dim,
            value_dim=config.value_dim, height=padded[0] // 16, width=padded[1] // 16,
            objects=memory.max_objects, bytes_per_element=self.element_size,
        )  # fmt: skip
        used = self.reserved_bytes()
        if used + need > self.budget:
            self._refuse(
                "budget",
                f"a session at {size[1]}x{size[0]} with up to {memory.max_objects} objects "
                f"and {memory.max_memory_frames} memory frames needs {need} bytes; "
                f"{used} of {self.budget} are reserved",
            )
        return need

    def _refuse(self, reason: str, message: str) -> None:
        self.refusals[reason] += 1
        raise Refusal(C.RESOURCE_EXHAUSTED, message)

    def reserved_bytes(self) -> int:
        return sum(e.reserved_bytes for e in self.sessions.values())

    # ------------------------------------------------------------------ sessions

    def _entry(self, corr: str) -> Entry:
        entry = self.sessions.get(corr)
        if entry is None:
            raise Refusal(
                C.UNKNOWN_SESSION,
                f"no session {corr!r} on this instance (never opened, closed, or freed "
                "after being idle); prime a new one from its record",
            )
        return entry

    def _free(self, corr: str, closed: bool = False) -> bool:
        entry = self.sessions.pop(corr, None)
        if entry is None:
            return False
        entry.session.close()
        if closed:
            self.counters["closes"] += 1
        return True

    def _sweep(self) -> None:
        if self.ttl <= 0:
            return
        now = time.monotonic()
        for corr in [c for c, e in self.sessions.items() if now - e.last_used > self.ttl]:
            self._free(corr)
            self.counters["evictions"] += 1
            _log("info", f"isvos: freed session {corr} after {self.ttl} s idle")

    def _sweep_loop(self) -> None:
        # Metrics are refreshed here too, not per request: each update is an IPC round trip
        # to the server process.
        interval = max(0.2, min(self.ttl / 4, METRICS_PERIOD_S)) if self.ttl > 0 else 1.0
        while not self._stop.wait(interval):
            try:
                with self.lock:
                    self._sweep()
                    self._update_metrics()
            except Exception:  # noqa: BLE001 - never let the sweeper die
                _log("error", "isvos: sweep failed:\n" + traceback.format_exc())

    def stats(self) -> dict:
        now = time.monotonic()
        sessions = [
            {
                "id": corr,
                "next_frame_index": e.session.next_frame_index,
                "objects": list(e.session.object_ids),
                "memory_bytes": e.session.memory_bytes(),
                "reserved_bytes": e.reserved_bytes,
                "idle_s": round(now - e.last_used, 3),
            }
            for corr, e in self.sessions.items()
        ]
        return {
            "kind": C.STATS,
            "instance": self.instance,
            "device": self.device,
            "model": self.runner.config.name,
            "model_hash": self.runner.model_hash,
            "sessions": len(self.sessions),
            "memory_bank_bytes": sum(s["memory_bytes"] for s in sessions),
            "reserved_bytes": self.reserved_bytes(),
            "budget_bytes": self.budget,
            "max_sessions": self.max_sessions,
            "ttl_seconds": self.ttl,
            "evictions": self.counters["evictions"],
            "re_primes": self.counters["re_primes"],
            "opens": self.counters["opens"],
            "closes": self.counters["closes"],
            "refusals": dict(self.refusals),
            "errors": dict(self.errors),
            "executes": self.counters["executes"],
            "requests": self.counters["requests"],
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "step_batch_sizes": {str(k): v for k, v in sorted(self.step_batch_sizes.items())},
            "max_step_batch": max(self.step_batch_sizes, default=0),
            "session_list": sessions,
        }

    # ------------------------------------------------------------------ decoding

    @staticmethod
    def _correlation_id(request) -> str | None:
        corr = request.correlation_id()
        if corr in (0, "", None):
            return None
        return str(corr)

    def _kind(self, request) -> str:
        data = self._bytes(request, C.KIND)
        if data is None:
            raise Refusal(C.INVALID_ARGUMENT, "KIND is required")
        kind = data.decode(errors="replace")
        if kind not in C.REQUEST_KINDS:
            raise Refusal(
                C.INVALID_ARGUMENT, f"unknown request kind {kind!r}; one of {C.REQUEST_KINDS}"
            )
        return kind

    @staticmethod
    def _tensor(request, name: str) -> np.ndarray | None:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            return None
        array = tensor.as_numpy()
        if array.ndim == 0 or array.shape[0] != 1:
            raise Refusal(C.INVALID_ARGUMENT, f"{name}: the batch dimension must be 1")
        return array[0]

    def _bytes(self, request, name: str) -> bytes | None:
        array = self._tensor(request, name)
        if array is None:
            return None
        if array.size != 1:
            raise Refusal(C.INVALID_ARGUMENT, f"{name} must hold one element")
        value = array.reshape(-1)[0]
        return value if isinstance(value, bytes) else str(value).encode()

    def _array(self, request, name: str, dtype, ndim: int) -> np.ndarray | None:
        array = self._tensor(request, name)
        if array is None:
            return None
        if array.dtype != dtype or array.ndim != ndim:
            raise Refusal(
                C.INVALID_ARGUMENT,
                f"{name} must be {np.dtype(dtype).name} with {ndim} dims (after the batch "
                f"dim), got {array.dtype} {array.shape}",
            )
        return array

    def _int_list(self, request, name: str, required: bool = False) -> list[int] | None:
        array = self._tensor(request, name)
        if array is None:
            if required:
                raise Refusal(C.INVALID_ARGUMENT, f"{name} is required")
            return None
        return [int(v) for v in array.reshape(-1)]

    def _int_scalar(self, request, name: str, default):
        values = self._int_list(request, name)
        if values is None:
            return default
        if len(values) != 1:
            raise Refusal(C.INVALID_ARGUMENT, f"{name} must hold one integer")
        return values[0]

    def _options(self, request) -> tuple[dict, str]:
        data = self._bytes(request, C.OPTIONS)
        if not data:
            return {}, ""
        try:
            options = json.loads(data)
        except ValueError as exc:
            raise Refusal(C.INVALID_ARGUMENT, f"OPTIONS is not JSON: {exc}") from exc
        if not isinstance(options, dict):
            raise Refusal(C.INVALID_ARGUMENT, "OPTIONS must be a JSON object")
        attach = options.pop(C.ATTACH_RECORD, "") or ""
        if attach is True:
            attach = "skeleton"
        if attach not in ("", "skeleton", "full"):
            raise Refusal(C.INVALID_ARGUMENT, f"{C.ATTACH_RECORD} must be skeleton or full")
        return options, attach

    def _masks(self, request) -> dict[int, np.ndarray] | None:
        labels = self._array(request, C.MASKS, np.uint8, ndim=2)
        ids = self._int_list(request, C.OBJECT_IDS)
        if labels is None:
            if ids:
                raise Refusal(C.INVALID_ARGUMENT, "OBJECT_IDS on a step needs MASKS")
            return None
        masks = masks_from_labels(labels, ids)
        return masks or None

    def _step_args(self, request) -> tuple[int, np.ndarray, dict | None]:
        index = self._int_scalar(request, C.FRAME_INDEX, default=None)
        if index is None:
            raise Refusal(C.INVALID_ARGUMENT, "step needs FRAME_INDEX")
        image = self._array(request, C.IMAGE, np.uint8, ndim=3)
        if image is None:
            raise Refusal(C.INVALID_ARGUMENT, "step needs IMAGE")
        return index, image, self._masks(request)

    # ------------------------------------------------------------------ encoding

    def _attached_record(self, entry: Entry, info: dict) -> bytes | None:
        if not entry.attach_record:
            return None
        record = entry.session.record()
        if entry.attach_record == "skeleton":
            # The record without its frames and label maps: the client holds those (it
            # sent the frames and received the label maps) and fills them in when needed.
            empty = np.zeros((0,), np.uint8)
            for slot in record.slots:
                slot.image = empty
                slot.labels = empty
        info["record"] = entry.attach_record
        return record.to_bytes()

    def _step_response(self, entry: Entry, result, replayed: bool, extra: dict | None = None):
        info = dict(extra or {})
        info.update(
            kind=info.get("kind", C.STEP),
            frame_index=result.frame_index,
            memorised=bool(result.memorised),
            replayed=bool(replayed),
            memory_bytes=entry.session.memory_bytes(),
        )
        record = None
        if result.memorised:  # replays too: the first answer may have been lost
            record = self._attached_record(entry, info)
        outputs = [
            pb_utils.Tensor(C.PROBABILITIES, C.to_float16(result.probabilities)[None]),
            pb_utils.Tensor(C.LABELS, np.ascontiguousarray(result.labels, np.uint8)[None]),
            pb_utils.Tensor(C.OBJECTS, np.asarray(result.object_ids, np.int32)[None]),
            pb_utils.Tensor(C.INFO, np.array([[C.dumps(info)]], dtype=np.object_)),
        ]
        if record is not None:
            outputs.append(pb_utils.Tensor(C.RECORD_OUT, np.array([[record]], dtype=np.object_)))
        return pb_utils.InferenceResponse(output_tensors=outputs)

    @staticmethod
    def _info_response(info: dict, record: bytes | None = None):
        outputs = [pb_utils.Tensor(C.INFO, np.array([[C.dumps(info)]], dtype=np.object_))]
        if record is not None:
            outputs.append(pb_utils.Tensor(C.RECORD_OUT, np.array([[record]], dtype=np.object_)))
        return pb_utils.InferenceResponse(output_tensors=outputs)

    def _error_response(self, exc: Exception):
        from isvos.engine import EngineError

        if isinstance(exc, Refusal):
            code, message = exc.code, str(exc)
        elif isinstance(exc, EngineError):
            code, message = exc.code, str(exc)
        else:
            code, message = C.INTERNAL, f"{type(exc).__name__}: {exc}"
            _log("error", "isvos: internal error:\n" + traceback.format_exc())
        self.errors[code] += 1
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(C.error_string(code, message))
        )

    # ------------------------------------------------------------------ metrics

    def _init_metrics(self) -> dict | None:
        family_cls = getattr(pb_utils, "MetricFamily", None)
        if family_cls is None:
            return None
        labels = {"model": C.MODEL_NAME, "instance": self.instance}
        specs = {
            "sessions": ("isvos_sessions", "Live sessions", family_cls.GAUGE),
            "memory": ("isvos_memory_bank_bytes", "Memory-bank bytes held", family_cls.GAUGE),
            "reserved": ("isvos_reserved_bytes", "Bytes reserved by admission", family_cls.GAUGE),
            "budget": ("isvos_budget_bytes", "Memory-bank byte budget", family_cls.GAUGE),
            "evictions": ("isvos_idle_evictions", "Sessions freed after the TTL", family_cls.GAUGE),
            "refusals": ("isvos_refusals", "Opens refused (resource exhausted)", family_cls.GAUGE),
            "re_primes": ("isvos_re_primes", "Sessions primed from a record", family_cls.GAUGE),
        }
        try:
            self._families = [
                family_cls(name=name, description=text, kind=kind)
                for name, text, kind in specs.values()
            ]
            return {
                key: family.Metric(labels=labels)
                for key, family in zip(specs, self._families, strict=True)
            }
        except Exception as exc:  # noqa: BLE001 - metrics disabled or unsupported
            _log("info", f"isvos: custom metrics unavailable ({exc})")
            return None

    def _update_metrics(self) -> None:
        if not self._metrics:
            return
        try:
            values = {
                "sessions": len(self.sessions),
                "memory": sum(e.session.memory_bytes() for e in self.sessions.values()),
                "reserved": self.reserved_bytes(),
                "budget": self.budget,
                "evictions": self.counters["evictions"],
                "refusals": sum(self.refusals.values()),
                "re_primes": self.counters["re_primes"],
            }
            for key, value in values.items():
                self._metrics[key].set(float(value))
        except Exception:  # noqa: BLE001 - metrics never fail a request
            self._metrics = None
