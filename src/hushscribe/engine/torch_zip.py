"""Read a PyTorch checkpoint (``torch.save``'s zip format) without torch, and without running it.

A checkpoint is a pickle, and unpickling calls whatever the pickle names: a crafted ``.pt`` runs
``os.system`` as soon as ``torch.load`` opens it. Here the pickle may name only what a state dict
is made of (``OrderedDict``, the tensor rebuild functions, the storage types), each answered by
our own stand-in; anything else is refused before it is called. Tensors come back as
:class:`TensorRef` — where the bytes are and how to view them — and become numpy arrays mapped
from the file only when asked, so a 3 GB checkpoint is not read into memory twice.

Layout (``torch/serialization.py``): ``<name>/data.pkl`` holds the pickled object, whose
storages are persistent ids ``("storage", <torch.HalfStorage>, key, location, numel)``; the
bytes of storage ``key`` are the zip member ``<name>/data/<key>``, stored uncompressed (and
mapped from the file here; their CRC is checked as they are first read).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeGuard

import numpy as np

from hushscribe.errors import InvalidModel, UnsafeCheckpoint

MAX_PICKLE_BYTES = 64 * 1024 * 1024
"""The pickle holds only names and shapes (large-v3's is about 100 kB; the weights are in other
members): a bigger one is no model checkpoint, and unpickling it would take memory for nothing."""

MAX_NDIM = 8
"""Whisper's tensors have 1 to 3 dimensions; more is not a Whisper checkpoint."""

BFLOAT16 = "bfloat16"
"""numpy has no bfloat16: such storages are widened to float32 (exactly) when read."""

_STORAGE_DTYPES = {
    "HalfStorage": "<f2",
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "BFloat16Storage": BFLOAT16,
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "UntypedStorage": "u1",  # what torch itself reads an untyped storage as: bytes
}
_ITEMSIZE = {BFLOAT16: 2}


class _StorageType:
    """Stands in for ``torch.HalfStorage`` & co. in the pickle: only says which dtype."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    def __setstate__(self, state: object) -> None:
        raise _BadPickle("an attempt to change a storage type")


class _Callable:
    """One allowed callable, fresh for each reference: the pickle's BUILD opcode cannot change
    it (``__setstate__`` refuses), and no two loads share anything a pickle could reach."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., object]) -> None:
        self._fn = fn

    def __call__(self, *args: object) -> object:
        return self._fn(*args)

    def __setstate__(self, state: object) -> None:
        raise _BadPickle("an attempt to change a function")


@dataclass
class _Storage:
    """One storage: a zip member of ``numel`` elements of ``dtype``."""

    archive: Path
    member: zipfile.ZipInfo
    offset: int  # where its bytes start in the file
    dtype: str
    numel: int
    _array: np.ndarray | None = field(default=None, repr=False)

    def array(self) -> np.ndarray:
        """The whole storage as a 1-d array, mapped from the file; its CRC is checked once."""
        if self._array is None:
            raw_dtype = "<u2" if self.dtype == BFLOAT16 else self.dtype
            if self.numel == 0:
                data = np.zeros(0, dtype=raw_dtype)
            else:
                data = np.memmap(
                    self.archive, dtype=raw_dtype, mode="r", offset=self.offset, shape=(self.numel,)
                )
                if _crc32(data) != self.member.CRC:
                    raise InvalidModel(
                        f"{self.archive}: {self.member.filename} is damaged (CRC mismatch); "
                        "copy the checkpoint again"
                    )
            if self.dtype == BFLOAT16:  # the upper half of a float32: exact
                data = (data.astype("<u4") << 16).view("<f4")
            self._array = data
        return self._array


def _crc32(data: np.ndarray) -> int:
    crc = 0
    flat = data.reshape(-1).view(np.uint8)
    for start in range(0, flat.size, 64 * 1024 * 1024):
        crc = zlib.crc32(flat[start : start + 64 * 1024 * 1024].data, crc)
    return crc


@dataclass(frozen=True)
class TensorRef:
    """A tensor of the checkpoint, not read yet."""

    storage: _Storage
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> str:
        return "<f4" if self.storage.dtype == BFLOAT16 else self.storage.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def array(self) -> np.ndarray:
        """The tensor as a read-only numpy array (a view of the mapped file where possible)."""
        base = self.storage.array()[self.storage_offset :]
        item = base.dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            base, shape=self.shape, strides=[s * item for s in self.stride], writeable=False
        )


def _rebuild_tensor(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> TensorRef:
    """``torch._utils._rebuild_tensor_v2``, checked: the view must lie inside its storage."""
    if not isinstance(storage, _Storage) or not isinstance(storage_offset, int):
        raise _BadPickle("a tensor without a storage")
    if not _int_tuple(size) or not _int_tuple(stride):
        raise _BadPickle("a tensor with an invalid shape")
    if len(size) != len(stride) or len(size) > MAX_NDIM or storage_offset < 0:
        raise _BadPickle("a tensor with an invalid shape")
    if all(n > 0 for n in size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= storage.numel:
            raise _BadPickle(f"a tensor of shape {size} reaching past its storage")
    return TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object) -> object:
    """``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    if not isinstance(data, TensorRef):
        raise _BadPickle("a parameter without a tensor")
    return data


def _int_tuple(value: object) -> TypeGuard[tuple[int, ...]]:
    return isinstance(value, tuple) and all(isinstance(v, int) and v >= 0 for v in value)


class _BadPickle(Exception):
    """The pickle is well-formed but not what a checkpoint holds."""


_FUNCTIONS: dict[tuple[str, str], Callable[..., object]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_STORAGE_TYPES = {("torch", n): n for n in _STORAGE_DTYPES} | {
    ("torch.storage", "UntypedStorage"): "UntypedStorage"
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], storage: Callable[[str, _StorageType, int], _Storage]):
        super().__init__(file)
        self._storage = storage
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _FUNCTIONS:
            return _Callable(_FUNCTIONS[module, name])
        if (module, name) in _STORAGE_TYPES:
            return _StorageType(_STORAGE_TYPES[module, name])
        raise UnsafeCheckpoint(ascii(f"{module}.{name}")[1:-1][:120])

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _BadPickle(f"an unknown persistent id {str(pid)[:80]!r}")
        _, kind, key, _location, numel = pid
        if type(kind) is not _StorageType or not isinstance(key, str) or len(key) > 64:
            raise _BadPickle("a storage of an unknown type")
        if not isinstance(numel, int) or numel < 0:
            raise _BadPickle("a storage of negative size")
        if key not in self._storages:
            self._storages[key] = self._storage(key, kind, numel)
        storage = self._storages[key]
        if storage.dtype != kind.dtype or storage.numel != numel:
            raise _BadPickle(f"storage {key} named with two types")
        return storage


def load(path: Path) -> Any:
    """The object ``torch.save`` wrote to ``path``, tensors as :class:`TensorRef`.

    Raises :class:`UnsafeCheckpoint` when the pickle names anything a checkpoint does not hold
    (nothing named is ever called), :class:`InvalidModel` for a file that is not a readable
    checkpoint (truncated, damaged, another format)."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InvalidModel(_not_a_checkpoint(path)) from None
    except OSError as exc:
        raise InvalidModel(f"cannot read {path}: {exc.strerror or exc}") from None
    with zf:
        pickles = [n for n in zf.namelist() if n.split("/")[-1] == "data.pkl" and n.count("/") <= 1]
        if len(pickles) != 1:
            raise InvalidModel(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "byteorder" in zf.namelist() and zf.read(prefix + "byteorder") != b"little":
            raise InvalidModel(f"{path} was saved on a big-endian machine; re-save it on x86/ARM")
        info = zf.getinfo(pickles[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise InvalidModel(f"{path}: its data.pkl is {info.file_size} bytes; not a checkpoint")
        try:
            data = zf.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise InvalidModel(f"{path} is damaged: {exc}") from None
        size = path.stat().st_size

        def storage(key: str, kind: _StorageType, numel: int) -> _Storage:
            try:
                member = zf.getinfo(f"{prefix}data/{key}")
            except KeyError:
                raise _BadPickle(f"storage {key!r}, which the archive does not hold") from None
            item = _ITEMSIZE.get(kind.dtype) or np.dtype(kind.dtype).itemsize
            if member.file_size != numel * item:
                raise _BadPickle(f"storage {key!r} of {member.file_size} bytes for {numel} values")
            if member.compress_type != zipfile.ZIP_STORED:  # torch.save never compresses
                raise _BadPickle(f"storage {key!r} compressed, as torch.save never writes it")
            offset = _data_offset(zf, member)
            if offset + member.file_size > size:
                raise InvalidModel(_not_a_checkpoint(path))
            return _Storage(path, member, offset, kind.dtype, numel)

        try:
            return _Unpickler(io.BytesIO(data), storage).load()
        except UnsafeCheckpoint as exc:
            raise UnsafeCheckpoint(
                f"{path} refers to {exc.message}, which a model checkpoint has no reason to "
                "hold; refusing it (nothing in it was run). Convert only checkpoints from a "
                "source you trust."
            ) from None
        except _BadPickle as exc:
            raise InvalidModel(f"{path} is not a valid checkpoint: it holds {exc}") from None
        except InvalidModel:
            raise
        except (pickle.UnpicklingError, *_PICKLE_FAILURES) as exc:
            raise InvalidModel(f"{path} is not a valid checkpoint: {exc!r}"[:500]) from None


def _not_a_checkpoint(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(2)
    if head == b"\x80\x02":  # a bare pickle: PyTorch's format before 1.6
        return (
            f"{path} is in PyTorch's legacy (pre-1.6) format; re-save it with a current PyTorch "
            "(torch.save(torch.load(f), f)) and import that"
        )
    return f"{path} is not a PyTorch checkpoint, or it is truncated (no zip directory at its end)"


def _data_offset(zf: zipfile.ZipFile, member: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes begin: after its local header, name and extra field."""
    fp = zf.fp
    assert fp is not None  # an open ZipFile has its file
    fp.seek(member.header_offset)
    header = fp.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise InvalidModel(f"{zf.filename}: damaged zip entry {member.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return int(member.header_offset) + 30 + int(name_len) + int(extra_len)


_PICKLE_FAILURES = (
    EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError,
    OverflowError, MemoryError,
)  # fmt: skip
"""What a malformed pickle makes the unpickler raise (a crafted one, any of them)."""
