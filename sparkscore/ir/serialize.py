"""Safe on-disk format: ``model.json`` + ``arrays.npz`` (``allow_pickle=False``) + ``sha256``.

Both files are written deterministically (canonical JSON; a zip with fixed timestamps and arrays
in name order), so one model always has one sha256 however often it is saved, and the hash covers
every byte on disk: any flipped byte is caught.  Loading recomputes it and refuses anything that
does not match, was written by an unknown format version, or holds object arrays.  Nothing here
can unpickle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from sparkscore.errors import FormatVersionError, IntegrityError

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
ARRAYS_NPZ = "arrays.npz"
SHA256_FILE = "sha256"


def to_payload(obj) -> tuple[dict, dict[str, np.ndarray]]:
    """Split a frozen IR dataclass into JSON-able fields and named arrays."""
    fields: dict = {}
    arrays: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = value
        else:
            fields[f.name] = value.item() if isinstance(value, np.generic) else value
    return fields, arrays


def canonical_json(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode(doc: dict, arrays: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    """Deterministic (model.json, arrays.npz) bytes for a document and its arrays."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            arr = np.ascontiguousarray(arrays[name])
            if arr.dtype.hasobject:
                raise ValueError(f"array {name!r} has dtype object; the model format holds numeric arrays only")
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return canonical_json(doc), buf.getvalue()


def digest(json_bytes: bytes, npz_bytes: bytes) -> str:
    h = hashlib.sha256()
    h.update(len(json_bytes).to_bytes(8, "big"))
    h.update(json_bytes)
    h.update(npz_bytes)
    return h.hexdigest()


def content_sha256(doc: dict, arrays: dict[str, np.ndarray]) -> str:
    return digest(*encode(doc, arrays))


def write_dir(path: str | os.PathLike, doc: dict, arrays: dict[str, np.ndarray]) -> str:
    """Write the three files (atomically per file) and return the sha256."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    doc = dict(doc, format_version=FORMAT_VERSION)
    raw_json, raw_npz = encode(doc, arrays)
    sha = digest(raw_json, raw_npz)
    for name, data in ((ARRAYS_NPZ, raw_npz), (MODEL_JSON, raw_json), (SHA256_FILE, (sha + "\n").encode())):
        tmp = path / f".{name}.tmp-{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, path / name)
    return sha


def read_dir(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray], str]:
    """Read and verify a model directory; returns (doc, arrays, sha256)."""
    path = Path(path)
    try:
        raw_json = (path / MODEL_JSON).read_bytes()
        raw_npz = (path / ARRAYS_NPZ).read_bytes()
        expected = (path / SHA256_FILE).read_text().strip()
    except FileNotFoundError as exc:
        raise IntegrityError(f"{path}: not a sparkscore model directory (missing {Path(exc.filename).name}); "
                             "save it with Model.save or register it again") from None
    actual = digest(raw_json, raw_npz)
    if actual != expected:
        raise IntegrityError(f"{path}: sha256 mismatch (recorded {expected[:12]}..., files {actual[:12]}...); "
                             "the model files were modified or damaged: re-register the model")
    try:
        doc = json.loads(raw_json.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise IntegrityError(f"{path}: {MODEL_JSON} is not valid JSON; re-register the model") from None
    version = doc.get("format_version") if isinstance(doc, dict) else None
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"{path}: model format version {version!r} is not supported by this sparkscore "
            f"(reads version {FORMAT_VERSION}); upgrade sparkscore or re-save the model"
        )
    try:
        with np.load(io.BytesIO(raw_npz), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise IntegrityError(f"{path}: {ARRAYS_NPZ} is corrupt or holds non-numeric data ({type(exc).__name__}); "
                             "re-register the model") from None
    return doc, arrays, actual
