from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackpressurePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKPRESSURE_POLICY_UNSPECIFIED: _ClassVar[BackpressurePolicy]
    BACKPRESSURE_POLICY_EVERY_FRAME: _ClassVar[BackpressurePolicy]
    BACKPRESSURE_POLICY_LATEST: _ClassVar[BackpressurePolicy]

class MaskFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MASK_FORMAT_UNSPECIFIED: _ClassVar[MaskFormat]
    MASK_FORMAT_RLE: _ClassVar[MaskFormat]
    MASK_FORMAT_INDEXED_PNG: _ClassVar[MaskFormat]
BACKPRESSURE_POLICY_UNSPECIFIED: BackpressurePolicy
BACKPRESSURE_POLICY_EVERY_FRAME: BackpressurePolicy
BACKPRESSURE_POLICY_LATEST: BackpressurePolicy
MASK_FORMAT_UNSPECIFIED: MaskFormat
MASK_FORMAT_RLE: MaskFormat
MASK_FORMAT_INDEXED_PNG: MaskFormat

class TrackRequest(_message.Message):
    __slots__ = ("open", "frame", "remove_objects", "close")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    REMOVE_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    open: Open
    frame: Frame
    remove_objects: RemoveObjects
    close: Close
    def __init__(self, open: _Optional[_Union[Open, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ..., remove_objects: _Optional[_Union[RemoveObjects, _Mapping]] = ..., close: _Optional[_Union[Close, _Mapping]] = ...) -> None: ...

class TrackResponse(_message.Message):
    __slots__ = ("opened", "result", "closed")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    opened: Opened
    result: FrameResult
    closed: Closed
    def __init__(self, opened: _Optional[_Union[Opened, _Mapping]] = ..., result: _Optional[_Union[FrameResult, _Mapping]] = ..., closed: _Optional[_Union[Closed, _Mapping]] = ...) -> None: ...

class Open(_message.Message):
    __slots__ = ("config", "short_side", "memory", "policy", "mask_format", "resume_token", "last_received_index", "preset")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SHORT_SIDE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MASK_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LAST_RECEIVED_INDEX_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    config: str
    short_side: int
    memory: MemoryOptions
    policy: BackpressurePolicy
    mask_format: MaskFormat
    resume_token: str
    last_received_index: int
    preset: str
    def __init__(self, config: _Optional[str] = ..., short_side: _Optional[int] = ..., memory: _Optional[_Union[MemoryOptions, _Mapping]] = ..., policy: _Optional[_Union[BackpressurePolicy, str]] = ..., mask_format: _Optional[_Union[MaskFormat, str]] = ..., resume_token: _Optional[str] = ..., last_received_index: _Optional[int] = ..., preset: _Optional[str] = ...) -> None: ...

class MemoryOptions(_message.Message):
    __slots__ = ("max_memory_frames", "mem_every", "top_k", "max_objects")
    MAX_MEMORY_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MEM_EVERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    max_memory_frames: int
    mem_every: int
    top_k: int
    max_objects: int
    def __init__(self, max_memory_frames: _Optional[int] = ..., mem_every: _Optional[int] = ..., top_k: _Optional[int] = ..., max_objects: _Optional[int] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "capture_time_us", "image", "masks")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_US_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    index: int
    capture_time_us: int
    image: Image
    masks: Masks
    def __init__(self, index: _Optional[int] = ..., capture_time_us: _Optional[int] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., masks: _Optional[_Union[Masks, _Mapping]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("jpeg", "png", "rgb", "i420", "width", "height")
    JPEG_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    I420_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    jpeg: bytes
    png: bytes
    rgb: bytes
    i420: bytes
    width: int
    height: int
    def __init__(self, jpeg: _Optional[bytes] = ..., png: _Optional[bytes] = ..., rgb: _Optional[bytes] = ..., i420: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Masks(_message.Message):
    __slots__ = ("indexed_png", "coco_rle_json")
    INDEXED_PNG_FIELD_NUMBER: _ClassVar[int]
    COCO_RLE_JSON_FIELD_NUMBER: _ClassVar[int]
    indexed_png: bytes
    coco_rle_json: str
    def __init__(self, indexed_png: _Optional[bytes] = ..., coco_rle_json: _Optional[str] = ...) -> None: ...

class RemoveObjects(_message.Message):
    __slots__ = ("object_ids",)
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    object_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, object_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Close(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Opened(_message.Message):
    __slots__ = ("session_id", "resume_token", "processing_height", "processing_width", "resume_after_index")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_WIDTH_FIELD_NUMBER: _ClassVar[int]
    RESUME_AFTER_INDEX_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    resume_token: str
    processing_height: int
    processing_width: int
    resume_after_index: int
    def __init__(self, session_id: _Optional[str] = ..., resume_token: _Optional[str] = ..., processing_height: _Optional[int] = ..., processing_width: _Optional[int] = ..., resume_after_index: _Optional[int] = ...) -> None: ...

class ObjectMask(_message.Message):
    __slots__ = ("object_id", "rle_counts")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    RLE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    object_id: int
    rle_counts: bytes
    def __init__(self, object_id: _Optional[int] = ..., rle_counts: _Optional[bytes] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("index", "capture_time_us", "height", "width", "objects", "indexed_png", "step_ms", "dropped_indices", "received_time_us", "sent_time_us")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_US_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    INDEXED_PNG_FIELD_NUMBER: _ClassVar[int]
    STEP_MS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_INDICES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_TIME_US_FIELD_NUMBER: _ClassVar[int]
    SENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    index: int
    capture_time_us: int
    height: int
    width: int
    objects: _containers.RepeatedCompositeFieldContainer[ObjectMask]
    indexed_png: bytes
    step_ms: float
    dropped_indices: _containers.RepeatedScalarFieldContainer[int]
    received_time_us: int
    sent_time_us: int
    def __init__(self, index: _Optional[int] = ..., capture_time_us: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., objects: _Optional[_Iterable[_Union[ObjectMask, _Mapping]]] = ..., indexed_png: _Optional[bytes] = ..., step_ms: _Optional[float] = ..., dropped_indices: _Optional[_Iterable[int]] = ..., received_time_us: _Optional[int] = ..., sent_time_us: _Optional[int] = ...) -> None: ...

class Closed(_message.Message):
    __slots__ = ("frames", "dropped")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    frames: int
    dropped: int
    def __init__(self, frames: _Optional[int] = ..., dropped: _Optional[int] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session_id", "live", "frames", "last_index", "object_ids")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    live: bool
    frames: int
    last_index: int
    object_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, session_id: _Optional[str] = ..., live: _Optional[bool] = ..., frames: _Optional[int] = ..., last_index: _Optional[int] = ..., object_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class CloseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseSessionResponse(_message.Message):
    __slots__ = ("closed",)
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    closed: bool
    def __init__(self, closed: _Optional[bool] = ...) -> None: ...
