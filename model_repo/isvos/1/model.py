"""Triton python-backend adapter over ``isvos.engine`` (DESIGN decisions 1, 4, 5).

A thin layer: it decodes requests, hands them to the engine's ``SessionManager`` (sessions
keyed by the sequence's correlation id ``"<session id>:<epoch>"``, admission, epoch fencing,
idle TTL) and encodes results. Everything about segmentation (memory policy, records,
errors) is the engine's; the contract is ``isvos/triton_contract.py``.

- START must come with ``open`` or ``prime`` (or ``stats``); a START on a live correlation id
  is refused (``already_exists``), never a silent reset. END frees the session.
- Triton does not tell the model when a sequence expires; a thread sweeps idle sessions.
- The Oldest sequence batcher hands several sessions' requests to one ``execute()``; their
  steps go through ``Engine.step_many`` (one frame-encoder call for the batch).
- Every error is a response ``"<code>: <message>"`` with a code of ``isvos.errors``; nothing
  a client sends crashes the model.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from isvos import triton_contract as C
from isvos.errors import IsvosError
from isvos.limits import MAX_OBJECT_ID, SessionLimits
from isvos.processing import masks_from_labels

START = 1
END = 2
GIB = 1 << 30
METRICS_PERIOD_S = 1.0


def _refuse(message: str, code: str = "invalid_argument") -> IsvosError:
    return IsvosError(code, message)


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

        from isvos.engine import Engine, ScriptedRunner, SessionManager

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
        budget = params[C.P_MEMORY_BUDGET]
        if budget == "auto":
            if on_gpu:
                total = torch.cuda.get_device_properties(torch.device(device)).total_memory
                budget = int(total * 0.6)
            else:
                budget = 4 * GIB
        limits = SessionLimits(
            max_processing_side=int(params[C.P_MAX_SIDE]),
            max_objects=int(params[C.P_MAX_OBJECTS]),
            max_memory_frames=int(params[C.P_MAX_MEMORY_FRAMES]),
            max_sessions=int(params[C.P_MAX_SESSIONS]),
            budget_bytes=int(budget),
            ttl_s=float(params[C.P_SESSION_TTL]),
            max_record_bytes=int(params[C.P_MAX_RECORD_BYTES]),
        )
        self.manager = SessionManager(self.engine, limits)
        self.drain_file = params[C.P_DRAIN_FILE]
        self.instance = args.get("model_instance_name", C.MODEL_NAME)
        self.device = device
        self.counters: Counter = Counter()
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
            f"budget {limits.budget_bytes} B, ttl {limits.ttl_s} s, "
            f"max {limits.max_sessions} sessions",
        )

    def finalize(self) -> None:
        self._stop.set()
        self.manager.close_all()

    # ------------------------------------------------------------------ execute

    def execute(self, requests):
        self.counters["executes"] += 1
        self.counters["requests"] += len(requests)
        self.batch_sizes[len(requests)] += 1
        responses = [None] * len(requests)
        pending: list[tuple[int, tuple[str, int], int, np.ndarray, dict | None]] = []
        for i, request in enumerate(requests):
            try:
                corr = request.correlation_id()
                if corr in (0, "", None):  # a null request of the Direct strategy
                    responses[i] = self._info_response({"null": True})
                    continue
                flags = request.flags()
                kind = self._kind(request)
                if kind == C.STATS:
                    responses[i] = self._info_response(self.stats())
                    continue
                if kind == C.PROPOSE:
                    responses[i] = self._propose(request)
                    continue
                key = self._key(corr)
                if kind == C.STEP and not flags & (START | END):
                    args = self._step_args(request)
                    if any(p[1] == key for p in pending):  # same session twice: keep order
                        self._flush(pending, responses)
                    pending.append((i, key, *args))
                    continue
                if any(p[1] == key for p in pending):
                    self._flush(pending, responses)
                try:
                    responses[i] = self._handle(kind, request, key, flags)
                finally:
                    if flags & END:
                        self.manager.close(*key)
            except Exception as exc:  # noqa: BLE001 - every error becomes a response
                responses[i] = self._error_response(exc)
        self._flush(pending, responses)
        return responses

    def _flush(self, pending: list, responses: list) -> None:
        if not pending:
            return
        try:
            self._step_pending(pending, responses)
        finally:
            pending.clear()

    def _step_pending(self, pending: list, responses: list) -> None:
        with ExitStack() as stack:
            ready, steps, replayed = [], [], []
            for i, key, index, image, wire in pending:
                try:
                    live = stack.enter_context(self.manager.use(*key))
                    masks = self._masks(wire, live.session.options.max_objects)
                except Exception as exc:  # noqa: BLE001 - reported per request
                    responses[i] = self._error_response(exc)
                    continue
                ready.append((i, live))
                steps.append((live.session, index, image, masks))
                replayed.append(live.session.replayed(index))
            self.step_batch_sizes[len(steps)] += 1
            started = time.perf_counter()
            try:
                results = self.engine.step_many(steps) if steps else []
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory: every request fails
                results = [exc] * len(steps)
            compute_ms = round((time.perf_counter() - started) * 1e3, 2)
            for (i, live), result, again in zip(ready, results, replayed, strict=True):
                if isinstance(result, Exception):
                    responses[i] = self._error_response(result)
                else:
                    extra = {"compute_ms": compute_ms, "batch": len(steps)}
                    responses[i] = self._step_response(live, result, again, extra=extra)

    # ------------------------------------------------------------------ request kinds

    def _handle(self, kind: str, request, key: tuple[str, int], flags: int):
        if kind in (C.OPEN, C.PRIME):
            if not flags & START:
                raise _refuse(f"{kind} must start a sequence (sequence_start)")
            return self._open(request, key) if kind == C.OPEN else self._prime(request, key)
        if flags & START:
            raise _refuse(f"only open, prime or stats may start a sequence, not {kind}")
        if kind == C.STEP:
            index, image, wire = self._step_args(request)
            with self.manager.use(*key) as live:
                masks = self._masks(wire, live.session.options.max_objects)
                again = live.session.replayed(index)
                started = time.perf_counter()
                result = live.session.step(index, image, masks)
                compute_ms = round((time.perf_counter() - started) * 1e3, 2)
                self.step_batch_sizes[1] += 1
                extra = {"compute_ms": compute_ms, "batch": 1}
                return self._step_response(live, result, again, extra=extra)
        if kind == C.REMOVE:
            ids = self._int_list(request, C.OBJECT_IDS, required=True)
            with self.manager.use(*key) as live:
                live.session.remove_objects(ids)
                info = {"kind": kind, "object_ids": list(live.session.object_ids)}
                return self._info_response(info, self._attached_header(live, info))
        if kind == C.RECORD_KIND:
            with self.manager.use(*key) as live:
                data = live.session.record().to_bytes()
            return self._info_response({"kind": kind, "bytes": len(data)}, data)
        if kind == C.CLOSE:
            closed = self.manager.close(*key)
            return self._info_response({"kind": kind, "closed": closed})
        raise _refuse(f"unknown request kind {kind!r}")

    def _propose(self, request):
        image = self._array(request, C.IMAGE, np.uint8, ndim=3)
        if image is None:
            raise _refuse("propose needs IMAGE")
        if max(image.shape[:2]) > self.manager.limits.max_processing_side:
            raise _refuse(f"image {image.shape[1]}x{image.shape[0]} is over the longest "
                          f"side of {self.manager.limits.max_processing_side}")  # fmt: skip
        objectness, probabilities = self.engine.propose(image)
        info = {"kind": C.PROPOSE, "objectness": [float(v) for v in objectness]}
        outputs = [
            pb_utils.Tensor(C.PROBABILITIES, np.ascontiguousarray(probabilities)[None]),
            pb_utils.Tensor(C.INFO, np.array([[C.dumps(info)]], dtype=np.object_)),
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs)

    @property
    def draining(self) -> bool:
        return bool(self.drain_file) and os.path.exists(self.drain_file)

    def _refuse_if_draining(self) -> None:
        if self.draining:
            self.counters["drain_refusals"] += 1
            raise IsvosError(
                "unavailable", "this Triton server is draining: open the session on another one"
            )

    def _open(self, request, key: tuple[str, int]):
        self._refuse_if_draining()
        options, extra, stride = self._options(request)
        image = self._array(request, C.IMAGE, np.uint8, ndim=3)
        size = self._int_list(request, C.PROCESSING_SIZE)
        if image is not None:
            if image.shape[2] != 3:
                raise _refuse(f"IMAGE must be [h, w, 3], got {image.shape}")
            size = list(image.shape[:2])
        if size is None or len(size) != 2:
            raise _refuse("open needs PROCESSING_SIZE (h, w) or IMAGE")
        live = self.manager.open(*key, (int(size[0]), int(size[1])), options,
                                 frame_stride=stride, extra=extra)  # fmt: skip
        info = {"kind": C.OPEN, "processing_size": list(size),
                "reserved_bytes": live.reserved_bytes}  # fmt: skip
        if image is None:
            return self._info_response(info)
        index = self._int_scalar(request, C.FRAME_INDEX, default=0)
        try:
            masks = self._masks(self._wire_masks(request), live.session.options.max_objects)
            with self.manager.use(*key) as used:
                result = used.session.step(index, image, masks)
        except Exception:
            self.manager.close(*key)
            raise
        self.step_batch_sizes[1] += 1
        return self._step_response(live, result, False, extra=info)

    def _prime(self, request, key: tuple[str, int]):
        from isvos.record import SessionRecord

        self._refuse_if_draining()
        data = self._bytes(request, C.RECORD)
        if data is None:
            raise _refuse("prime needs RECORD")
        record = SessionRecord.from_bytes(data, self.manager.limits)
        _, extra, _ = self._options(request)
        resume = self._int_scalar(request, C.FRAME_INDEX, default=None)
        live = self.manager.prime(*key, record, resume_index=resume, extra=extra)
        info = {
            "kind": C.PRIME,
            "next_frame_index": live.session.next_frame_index,
            "object_ids": list(live.session.object_ids),
            "reserved_bytes": live.reserved_bytes,
        }
        return self._info_response(info, self._attached_header(live, info))

    # ------------------------------------------------------------------ TTL and stats

    def _sweep_loop(self) -> None:
        # Metrics are refreshed here too, not per request: each update is an IPC round trip
        # to the server process.
        ttl = self.manager.limits.ttl_s
        interval = max(0.2, min(ttl / 4, METRICS_PERIOD_S)) if ttl > 0 else 1.0
        while not self._stop.wait(interval):
            try:
                for session_id, epoch in self.manager.sweep():
                    _log("info", f"isvos: freed session {session_id}:{epoch} after {ttl} s idle")
                self._update_metrics()
            except Exception:  # noqa: BLE001 - never let the sweeper die
                _log("error", "isvos: sweep failed:\n" + traceback.format_exc())

    def stats(self) -> dict:
        stats = self.manager.stats()
        for entry in stats["session_list"]:
            entry["id"] = C.correlation_id(entry["id"], entry["epoch"])
        stats.update(
            kind=C.STATS,
            instance=self.instance,
            device=self.device,
            model=self.runner.config.name,
            model_hash=self.runner.model_hash,
            errors=dict(self.errors),
            executes=self.counters["executes"],
            requests=self.counters["requests"],
            batch_sizes={str(k): v for k, v in sorted(self.batch_sizes.items())},
            step_batch_sizes={str(k): v for k, v in sorted(self.step_batch_sizes.items())},
            max_step_batch=max(self.step_batch_sizes, default=0),
            draining=self.draining,
            drain_refusals=self.counters["drain_refusals"],
        )
        return stats

    # ------------------------------------------------------------------ decoding

    @staticmethod
    def _key(corr) -> tuple[str, int]:
        try:
            return C.split_correlation_id(str(corr))
        except ValueError as exc:
            raise _refuse(str(exc)) from exc

    def _kind(self, request) -> str:
        data = self._bytes(request, C.KIND)
        if data is None:
            raise _refuse("KIND is required")
        kind = data.decode(errors="replace")
        if kind not in C.REQUEST_KINDS:
            raise _refuse(f"unknown request kind {kind!r}; one of {C.REQUEST_KINDS}")
        return kind

    @staticmethod
    def _tensor(request, name: str) -> np.ndarray | None:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            return None
        array = tensor.as_numpy()
        if array.ndim == 0 or array.shape[0] != 1:
            raise _refuse(f"{name}: the batch dimension must be 1")
        return array[0]

    def _bytes(self, request, name: str) -> bytes | None:
        array = self._tensor(request, name)
        if array is None:
            return None
        if array.size != 1:
            raise _refuse(f"{name} must hold one element")
        value = array.reshape(-1)[0]
        return value if isinstance(value, bytes) else str(value).encode()

    def _array(self, request, name: str, dtype, ndim: int) -> np.ndarray | None:
        array = self._tensor(request, name)
        if array is None:
            return None
        if array.dtype != dtype or array.ndim != ndim:
            raise _refuse(
                f"{name} must be {np.dtype(dtype).name} with {ndim} dims (after the batch "
                f"dim), got {array.dtype} {array.shape}"
            )
        return array

    def _int_list(self, request, name: str, required: bool = False) -> list[int] | None:
        array = self._tensor(request, name)
        if array is None:
            if required:
                raise _refuse(f"{name} is required")
            return None
        if array.size > MAX_OBJECT_ID + 1:
            raise _refuse(f"{name} holds {array.size} values; at most {MAX_OBJECT_ID} apply")
        return [int(v) for v in array.reshape(-1)]

    def _int_scalar(self, request, name: str, default):
        values = self._int_list(request, name)
        if values is None:
            return default
        if len(values) != 1:
            raise _refuse(f"{name} must hold one integer")
        return values[0]

    def _options(self, request) -> tuple[dict, dict, int]:
        """(memory options, host extras, frame stride) from OPTIONS."""
        data = self._bytes(request, C.OPTIONS)
        if not data:
            return {}, {}, 1
        try:
            options = json.loads(data)
        except ValueError as exc:
            raise _refuse(f"OPTIONS is not JSON: {exc}") from exc
        if not isinstance(options, dict):
            raise _refuse("OPTIONS must be a JSON object")
        attach = options.pop(C.ATTACH_RECORD, "") or ""
        if attach not in ("", "header"):
            raise _refuse(f"{C.ATTACH_RECORD} must be 'header' or empty")
        stride = options.pop(C.FRAME_STRIDE, 1)
        if type(stride) is not int or stride < 1:
            raise _refuse(f"{C.FRAME_STRIDE} must be a positive integer")
        return options, {"attach": attach}, stride

    def _wire_masks(self, request) -> tuple[np.ndarray, list[int] | None] | None:
        """MASKS (a label map) and OBJECT_IDS as sent; masks are built per session."""
        labels = self._array(request, C.MASKS, np.uint8, ndim=2)
        ids = self._int_list(request, C.OBJECT_IDS)
        if labels is None:
            if ids:
                raise _refuse("OBJECT_IDS on a step needs MASKS")
            return None
        return labels, ids

    @staticmethod
    def _masks(wire, max_objects: int) -> dict[int, np.ndarray] | None:
        """{id: mask} from the wire, counted against the session's limit first, so no
        per-object array is allocated for a request that will be refused."""
        if wire is None:
            return None
        labels, ids = wire
        if ids is None:
            ids = [int(i) for i in np.unique(labels) if i]
        if len(set(ids)) > max_objects:
            raise _refuse(
                f"{len(set(ids))} objects exceed the session limit of {max_objects}",
                "invalid_objects",
            )
        return masks_from_labels(labels, ids) or None

    def _step_args(self, request) -> tuple[int, np.ndarray, tuple | None]:
        index = self._int_scalar(request, C.FRAME_INDEX, default=None)
        if index is None:
            raise _refuse("step needs FRAME_INDEX")
        image = self._array(request, C.IMAGE, np.uint8, ndim=3)
        if image is None:
            raise _refuse("step needs IMAGE")
        return index, image, self._wire_masks(request)

    # ------------------------------------------------------------------ encoding

    @staticmethod
    def _attached_header(live, info: dict) -> bytes | None:
        if live.extra.get("attach") != "header":
            return None
        info["record"] = "header"
        return live.session.header().to_json()

    def _step_response(self, live, result, replayed: bool, extra: dict | None = None):
        info = dict(extra or {})
        info.update(
            kind=info.get("kind", C.STEP),
            frame_index=result.frame_index,
            memorised=bool(result.memorised),
            replayed=bool(replayed),
            memory_bytes=live.session.memory_bytes(),
        )
        header = None
        if result.memorised:  # replays too: the first answer may have been lost
            header = self._attached_header(live, info)
        outputs = [
            pb_utils.Tensor(C.PROBABILITIES, C.to_float16(result.probabilities)[None]),
            pb_utils.Tensor(C.LABELS, np.ascontiguousarray(result.labels, np.uint8)[None]),
            pb_utils.Tensor(C.OBJECTS, np.asarray(result.object_ids, np.int32)[None]),
            pb_utils.Tensor(C.INFO, np.array([[C.dumps(info)]], dtype=np.object_)),
        ]
        if header is not None:
            outputs.append(pb_utils.Tensor(C.RECORD_OUT, np.array([[header]], dtype=np.object_)))
        return pb_utils.InferenceResponse(output_tensors=outputs)

    @staticmethod
    def _info_response(info: dict, record: bytes | None = None):
        outputs = [pb_utils.Tensor(C.INFO, np.array([[C.dumps(info)]], dtype=np.object_))]
        if record is not None:
            outputs.append(pb_utils.Tensor(C.RECORD_OUT, np.array([[record]], dtype=np.object_)))
        return pb_utils.InferenceResponse(output_tensors=outputs)

    def _error_response(self, exc: Exception):
        if isinstance(exc, IsvosError):
            code, message = exc.code, str(exc)
        else:
            code, message = "internal", f"{type(exc).__name__}: {exc}"
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
            manager = self.manager
            values = {
                "sessions": len(manager.sessions),
                "memory": manager.memory_bytes(),
                "reserved": manager.reserved_bytes(),
                "budget": manager.limits.budget_bytes,
                "evictions": manager.counters["evictions"],
                "refusals": sum(manager.refusals.values()),
                "re_primes": manager.counters["primes"],
            }
            for key, value in values.items():
                self._metrics[key].set(float(value))
        except Exception:  # noqa: BLE001 - metrics never fail a request
            self._metrics = None
