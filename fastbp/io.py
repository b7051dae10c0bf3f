"""Saving and loading a trained network: ``fastbp.save`` and ``fastbp.load``.

File format (version 2): a NumPy ``.npz`` archive (a zip file) with exactly two
entries, ``theta.npy`` and ``meta.npy``, both stored uncompressed (as ``numpy.savez``
writes them) and both plain arrays (loading never unpickles anything):

- ``theta``: the flat parameter vector (``Params.flat``), 1-D, little-endian
  float32 or float64, in the layout of ``fastbp.params``.
- ``meta``: UTF-8 JSON bytes (a 1-D uint8 array) of the object::

      {"format": "fastbp-model", "format_version": 2,
       "fastbp_version": "...", "network": Network.to_dict(),
       "n_params": int, "dtype": "float64", "sha256": hex digest,
       "metadata": the caller's JSON object or null}

``sha256`` is the SHA-256 digest of the canonical JSON of every other field of
that object (``json.dumps(..., sort_keys=True, separators=(",", ":"))``, ASCII),
one NUL byte, then theta's bytes: it covers the network description and the
caller's metadata as well as the parameters.  In version 1 (same entries, same
fields) it was the digest of theta's bytes alone.

A reader accepts every version up to its own and rejects newer ones, so a file
never loads into a program that would misread it.  Loading bounds what it reads
before reading it (see ``load_with_metadata``), so a small crafted file cannot
make it allocate much more than the file's own size.  Writes are atomic: the
archive is written to a temporary file in the target's directory, flushed to
disk, then renamed over the target, so a crash leaves either the old file or
the new one, never a truncated mix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from .network import Network
from .params import Params

__all__ = ["FORMAT_VERSION", "ModelFileError", "check_destination", "load",
           "load_with_metadata", "save"]

FORMAT = "fastbp-model"
FORMAT_VERSION = 2

# Limits of what ``load`` reads (``save`` refuses to write a file beyond them).
MAX_META_BYTES = 1 << 20  # JSON of the metadata entry
MAX_JSON_DEPTH = 32  # nested arrays and objects in it, the top-level object included
MAX_INT_DIGITS = 1000  # digits of any integer in it

_ENTRIES = ["meta.npy", "theta.npy"]
_META_KEYS = {"format", "format_version", "fastbp_version", "network", "n_params", "dtype",
              "sha256", "metadata"}
# The central directory of two short-named entries takes about 110 bytes.
_MAX_DIRECTORY_BYTES = 4096
# numpy's own bound on a .npy header (``max_header_size``); save's headers take 128 bytes.
_MAX_NPY_HEADER = 10000
_CHUNK = 1 << 20

# zip end records (APPNOTE 4.3.14 to 4.3.16)
_END = struct.Struct("<4s4H2LH")
_END64_LOCATOR = struct.Struct("<4sLQL")
_END64 = struct.Struct("<4sQ2H2L4Q")

# A JSON string (which may hold brackets), a bracket, or the quote of an unterminated string.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}"]', re.DOTALL)


class ModelFileError(ValueError):
    """A model file that cannot be loaded: corrupt, truncated, altered or too new."""


def check_destination(path, name: str = "path") -> str:
    """Check that ``path`` can name the model file to write, before any work.

    ``save`` calls it first; a program that computes a model before saving it
    (``fastbp train --save``) calls it before that work too, so that a bad
    destination fails at once rather than after training.

    Parameters
    ----------
    path : str or os.PathLike
        Where the model file is to be written.
    name : str, default "path"
        How messages name the argument (the command line passes ``"--save"``).

    Returns
    -------
    str
        ``path`` as a string.

    Raises
    ------
    TypeError
        ``path`` is not a str or os.PathLike.
    ValueError
        ``path`` is empty, names an existing directory or ends with a separator,
        or names something other than a regular file (a device, a FIFO, a
        socket), which the atomic write would replace by a file; or ``path`` is
        a symbolic link that cannot be resolved to a file to write (a loop, or a
        dangling link whose target's directory does not exist); or its file name
        is longer than the file system takes.
    FileNotFoundError
        The directory that would hold the file does not exist.
    OSError
        No file can be created in that directory (read-only, full, /proc): the
        atomic write's temporary file is made and removed here to find out.
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{name}: expected a file path (str or os.PathLike), got "
                        f"{type(path).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        # "" would put the temporary file next to the working directory, not in it
        raise ValueError(f"{name}: empty path (name the model file to write, such as "
                         "'model.npz')")
    if os.path.isdir(path) or path.endswith(tuple(s for s in (os.sep, os.altsep) if s)):
        example = os.path.join(path, "model.npz")
        raise ValueError(f"{name} {path!r}: is a directory, not a model file (name a file "
                         f"in it, such as {example!r})")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ValueError(f"{name} {path!r}: {_kind(path)}, not a regular file: saving would "
                         "replace it by a model file (name a file, such as 'model.npz')")
    if os.path.islink(path):
        _link_target(path, name)
    folder = os.path.dirname(os.path.abspath(_link_target(path, name)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{name} {path!r}: no such directory {folder!r}")
    base = len(os.fsencode(os.path.basename(_link_target(path, name))))
    try:
        longest = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = None
    if longest and base > longest:
        raise ValueError(f"{name} {path!r}: a file name of {base} bytes, more than the "
                         f"{longest} its file system takes")
    # the atomic write's temporary file, made and removed here: a folder where no
    # file can be created (read-only, /proc) failed only once the model was
    # computed, naming the temporary file
    try:
        fd, tmp = _temporary(path)
    except OSError as e:
        raise type(e)(f"{name} {path!r}: cannot create a file in {folder!r} "
                      f"({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)
    return path


def _temporary(path: str):
    """(fd, name) of a new temporary file beside ``path`` (``tempfile.mkstemp``),
    named after it: a hidden ``.NAME.<random>.tmp``, NAME cut to 64 characters so
    that the longest name a file system takes still leaves room for the rest."""
    directory = os.path.dirname(os.path.abspath(path))
    return tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path)[:64] + ".",
                            suffix=".tmp")


def _link_target(path: str, name: str = "path") -> str:
    """The file that saving to ``path`` writes: ``path`` itself, or where the
    symbolic link ``path`` leads (through every link in the chain), so that the
    link stays a link and points to the new content.  ValueError naming ``path``
    where there is no such file to write: a loop of links, or a dangling link
    whose target's directory does not exist."""
    if not os.path.islink(path):
        return path
    target = os.path.realpath(path)
    if os.path.islink(target):  # realpath stops at a loop and returns a link
        raise ValueError(f"{name} {path!r}: a symbolic link that does not resolve (a loop of "
                         "links); name a file, such as 'model.npz'")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise ValueError(f"{name} {path!r}: a dangling symbolic link to {target!r}, whose "
                         f"directory {folder!r} does not exist")
    return target


def _kind(path) -> str:
    """What the existing non-regular file at ``path`` is, in words."""
    mode = os.stat(path).st_mode
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return f"is {kind}"
    return "is not a regular file"


def save(path, net: Network, params: Params, *, metadata: dict | None = None) -> None:
    """Write ``net`` and ``params`` to ``path`` (an .npz file), atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, written exactly as named (no suffix added); an existing file
        is replaced only once the new one is complete on disk.  Checked first by
        ``check_destination``.  A symbolic link is followed: the new file replaces
        the link's target (a dangling link's target is created, if its directory
        exists), and the link stays a link to it.
    net : Network
    params : Params
        Parameters of ``net`` (stored in the network's dtype).
    metadata : dict, optional
        Extra JSON-able data kept with the model (feature and class names, say);
        read back by ``load_with_metadata``.  Stored as JSON, so it reads back as
        JSON gives it: tuples as lists, keys as strings.  It must fit the limits
        ``load`` enforces (at most ``MAX_JSON_DEPTH - 1`` levels deep, integers of
        at most ``MAX_INT_DIGITS`` digits, ``MAX_META_BYTES`` of JSON in all).

    Raises
    ------
    TypeError
        ``net``, ``params`` or ``metadata`` of the wrong type, or ``metadata`` not
        JSON-serializable.
    ValueError
        A bad ``path`` (see ``check_destination``), ``params`` not of ``net``, or
        ``metadata`` beyond the limits above.
    """
    path = check_destination(path)
    if not isinstance(net, Network):
        raise TypeError(f"net: expected fastbp.Network, got {type(net).__name__}")
    theta = net.check_params(params)
    # little-endian whatever the machine, so the checksum covers the same bytes everywhere
    theta = theta.astype(theta.dtype.newbyteorder("<"), copy=False)
    metadata = _portable_metadata(metadata)
    from . import __version__

    fields = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastbp_version": __version__,
        "network": net.to_dict(),
        "n_params": int(theta.size),
        "dtype": theta.dtype.name,
        "metadata": metadata,
    }
    fields["sha256"] = _checksum(FORMAT_VERSION, fields, theta)
    text = _canonical_json(fields)
    if len(text) > MAX_META_BYTES:
        # without metadata, the network's description alone is too long (many layers)
        what = "metadata" if metadata else "net"
        raise ValueError(f"{what}: {len(text)} bytes of JSON with the network description, "
                         f"more than the {MAX_META_BYTES} a model file may hold")
    meta_bytes = np.frombuffer(text, np.uint8)
    # a symlink's target is replaced, not the link (checked again: it may have changed)
    path = _link_target(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _temporary(path)
    try:
        # mkstemp creates the file 0600: give it the old file's mode, else rw-r--r--
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, theta=theta, meta=meta_bytes)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def load(path) -> tuple[Network, Params]:
    """Read a model written by ``save``, validating everything.

    Returns
    -------
    (Network, Params)

    Raises
    ------
    See ``load_with_metadata``.
    """
    net, params, _ = load_with_metadata(path)
    return net, params


def load_with_metadata(path) -> tuple[Network, Params, dict | None]:
    """``load``, plus the ``metadata`` dict given to ``save`` (None if none was).

    Everything is checked before it is read, from what the zip directory and the
    array headers declare: the archive holds exactly the entries ``meta.npy`` and
    ``theta.npy``, stored uncompressed and unencrypted, within the file; the
    metadata entry is a 1-D uint8 array of at most ``MAX_META_BYTES`` bytes of
    UTF-8 JSON, nested at most ``MAX_JSON_DEPTH`` deep, with integers of at most
    ``MAX_INT_DIGITS`` digits, no duplicate keys and exactly the fields of the
    format; the parameter entry is a 1-D C-order little-endian float array of the
    network's dtype whose length is the network's parameter count and whose size
    is exactly what its header and that count imply.  Only then are the
    parameters read, and their checksum verified.

    Returns
    -------
    (Network, Params, dict or None)

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ModelFileError (a ValueError)
        The file is not a fastbp model, is corrupt or truncated, breaks a limit
        above, its parameters do not match its network, it does not match its
        checksum, or it was written in a newer format version than this fastbp
        reads.  The message names the file and the problem.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: is a directory, not a model file")
    if not os.path.isfile(path):
        # a FIFO would block the open until a writer comes; a device reads for ever
        raise ModelFileError(f"{path}: {_kind(path)}, not a model file")

    def fail(problem):
        return ModelFileError(f"{path}: {problem}")

    with open(path, "rb") as f:
        try:
            return _read_model(f, fail)
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                KeyError, NotImplementedError, zlib.error) as e:
            # NotImplementedError: zipfile's answer to a "version needed to extract" it lacks
            raise fail(f"not a readable fastbp model file (corrupt or truncated: {e})") from None


# ---------------------------------------------------------------------- reading


def _read_model(f, fail):
    """The body of ``load_with_metadata`` on the open file ``f``."""
    size = os.fstat(f.fileno()).st_size
    records = _zip_end_records(f, size)
    if records is None:
        raise fail("not a readable fastbp model file (no zip end record: not a zip archive, "
                   "or truncated)")
    for entries, directory_bytes in records:
        # zipfile parses the whole central directory: bound it before it does
        if entries != len(_ENTRIES):
            raise fail(f"not a fastbp model file ({entries} zip entries, expected "
                       f"{len(_ENTRIES)}: {', '.join(_ENTRIES)})")
        if directory_bytes > _MAX_DIRECTORY_BYTES:
            raise fail(f"not a fastbp model file (a zip directory of {directory_bytes} bytes "
                       f"for 2 entries, at most {_MAX_DIRECTORY_BYTES})")
    f.seek(0)
    with zipfile.ZipFile(f) as archive:
        infos = archive.infolist()
        names = sorted(info.filename for info in infos)
        if names != _ENTRIES:
            raise fail(f"not a fastbp model file (entries {names}, expected {_ENTRIES})")
        for info in infos:
            _check_entry(info, size, fail)
        by_name = {info.filename: info for info in infos}

        info = by_name["meta.npy"]
        if info.file_size > MAX_META_BYTES + _MAX_NPY_HEADER:
            raise fail(f"corrupt metadata (meta.npy declares {info.file_size} bytes, more than "
                       f"the {MAX_META_BYTES} of JSON a model file may hold)")
        with archive.open(info) as stream:
            shape, fortran, dtype, header = _npy_header(stream, "meta.npy", fail)
            if dtype != np.uint8 or len(shape) != 1 or fortran:
                raise fail(f"corrupt metadata (meta.npy: expected a 1-D array of UTF-8 JSON "
                           f"bytes, got {dtype} of shape {_shape(shape)})")
            n = shape[0]
            if n > MAX_META_BYTES:
                raise fail(f"corrupt metadata ({n} bytes of JSON, more than the "
                           f"{MAX_META_BYTES} a model file may hold)")
            if header + n != info.file_size:
                raise fail(f"corrupt metadata (meta.npy holds {info.file_size} bytes, its "
                           f"header declares {header + n})")
            raw = stream.read(n)
            if len(raw) != n:
                raise fail(f"truncated metadata ({len(raw)} of {n} bytes)")
        meta, version = _parse_meta(raw, fail)
        # Every layer has a weight, so a network of more layers than theta.npy has room for
        # cannot be the file's; building one costs time (2 s for the 500 000 layers 1 MiB of
        # JSON can list), so it is refused first.
        sizes = meta["network"].get("sizes")
        room = by_name["theta.npy"].file_size // 4
        if isinstance(sizes, list) and len(sizes) - 1 > room:
            raise fail(f"invalid network description ({len(sizes) - 1} layers, more than the "
                       f"{room} parameters theta.npy has room for)")
        try:
            net = Network.from_dict(meta["network"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise fail(f"invalid network description ({e})") from None
        except OverflowError:  # widths beyond int64: no file of this size holds their weights
            raise fail(f"invalid network description (layer widths "
                       f"{meta['network'].get('sizes')!r:.80} too large)") from None
        if meta["dtype"] != net.dtype.name:
            raise fail(f"the metadata says {meta['dtype']!r} parameters but the network is "
                       f"{net.dtype}")

        info = by_name["theta.npy"]
        with archive.open(info) as stream:
            shape, fortran, dtype, header = _npy_header(stream, "theta.npy", fail)
            if len(shape) != 1 or fortran:
                order = ", Fortran order" if fortran else ""
                raise fail(f"parameters must be a 1-D array, got shape {_shape(shape)}{order}")
            if dtype.str not in ("<f4", "<f8"):
                raise fail(f"parameters must be little-endian float32 or float64, got "
                           f"{dtype.str!r} ({dtype})")
            if dtype.name != net.dtype.name:  # by name: '<f8' is float64 on any machine
                raise fail(f"parameters are {dtype} but the network is {net.dtype}")
            if shape[0] != net.n_params:
                raise fail(f"{shape[0]} parameters stored, the network {list(net.sizes)} "
                           f"needs {net.n_params}")
            if meta["n_params"] != net.n_params:
                raise fail(f"the metadata says {meta['n_params']!r} parameters but the "
                           f"network {list(net.sizes)} has {net.n_params}")
            nbytes = net.n_params * dtype.itemsize
            if header + nbytes != info.file_size:
                raise fail(f"theta.npy holds {info.file_size} bytes, its header declares "
                           f"{header + nbytes}")
            theta = np.empty(net.n_params, dtype)
            _read_into(stream, theta.view(np.uint8), fail)

    if meta["sha256"] != _checksum(version, meta, theta):
        covered = "parameters do" if version == 1 else "contents do"
        raise fail(f"{covered} not match their checksum (the file was altered or damaged)")
    theta = theta.astype(theta.dtype.newbyteorder("="), copy=False)
    if not np.isfinite(theta).all():
        raise fail("parameters contain NaN or inf")
    return net, Params(net.sizes, net.bias, theta), meta["metadata"]


def _zip_end_records(f, size):
    """[(entries, central directory bytes)] as the end record, and the zip64 end
    record when there is one, declare them; None where there is no end record.

    The end record is searched for as ``zipfile`` searches for it (the last 22
    bytes, else the last occurrence in the final 64 KiB + 22), and both places a
    zip64 end record may be read from (just before its locator, and where the
    locator points) are included, so that whatever ``zipfile`` goes by is bounded.
    """
    if size < _END.size:
        return None
    f.seek(size - _END.size)
    record = f.read(_END.size)
    at = size - _END.size
    if not (record[:4] == b"PK\x05\x06" and record[-2:] == b"\0\0"):
        start = max(size - (1 << 16) - _END.size, 0)
        f.seek(start)
        tail = f.read()
        i = tail.rfind(b"PK\x05\x06")
        if i < 0 or i + _END.size > len(tail):
            return None
        at = start + i
        record = tail[i:i + _END.size]
    fields = _END.unpack(record)
    records = [(fields[4], fields[5])]
    if at >= _END64_LOCATOR.size:
        f.seek(at - _END64_LOCATOR.size)
        signature, _, offset, _ = _END64_LOCATOR.unpack(f.read(_END64_LOCATOR.size))
        if signature == b"PK\x06\x07":
            for pos in sorted({at - _END64_LOCATOR.size - _END64.size, offset}):
                if 0 <= pos <= size - _END64.size:
                    f.seek(pos)
                    z64 = _END64.unpack(f.read(_END64.size))
                    if z64[0] == b"PK\x06\x06":
                        records.append((z64[7], z64[8]))
    return records


def _check_entry(info, size, fail):
    """An entry as ``save`` writes it: unencrypted, stored, within the file."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise fail(f"not a fastbp model file ({name} is encrypted)")
    if info.compress_type != zipfile.ZIP_STORED:
        # a compressed entry could expand far beyond the file: save never compresses
        raise fail(f"not a fastbp model file ({name} is compressed with zip method "
                   f"{info.compress_type}; model files store their entries uncompressed)")
    if info.compress_size != info.file_size or info.header_offset + info.file_size > size:
        raise fail(f"corrupt or truncated ({name} declares {info.file_size} bytes at offset "
                   f"{info.header_offset}, beyond the file's {size})")


def _npy_header(stream, name, fail):
    """(shape, fortran_order, dtype, header length) of the .npy array that
    ``stream`` starts with, its header bounded before it is read."""
    prefix = stream.read(8)
    if len(prefix) != 8 or prefix[:6] != b"\x93NUMPY":
        raise fail(f"corrupt or truncated ({name} is not a .npy array)")
    major, minor = prefix[6], prefix[7]
    if major not in (1, 2):
        raise fail(f"corrupt {name} (.npy format version {major}.{minor}; save writes 1.0)")
    width = 2 if major == 1 else 4
    length_bytes = stream.read(width)
    if len(length_bytes) != width:
        raise fail(f"truncated {name} (no array header)")
    length = int.from_bytes(length_bytes, "little")
    if length > _MAX_NPY_HEADER:
        raise fail(f"corrupt {name} (an array header of {length} bytes, at most "
                   f"{_MAX_NPY_HEADER})")
    header = stream.read(length)
    if len(header) != length:
        raise fail(f"truncated {name} (array header)")
    whole = io.BytesIO(prefix + length_bytes + header)
    np.lib.format.read_magic(whole)
    read = (np.lib.format.read_array_header_1_0 if major == 1
            else np.lib.format.read_array_header_2_0)
    try:
        shape, fortran, dtype = read(whole, max_header_size=_MAX_NPY_HEADER)
    except Exception as e:  # noqa: BLE001 - whatever numpy's parser of these few bytes raises
        # (ValueError, SyntaxError, tokenize.TokenError, RecursionError...), the header is bad
        raise fail(f"corrupt {name} (unreadable array header: {e})") from None
    return shape, fortran, dtype, 8 + width + length


def _shape(shape) -> str:
    """A declared shape for a message, however many dimensions it claims."""
    return str(shape) if len(shape) <= 4 else f"of {len(shape)} dimensions {shape[:4]}..."


def _read_into(stream, out, fail):
    """Fill the uint8 array ``out`` from ``stream``, a chunk at a time (no second
    copy of a large entry)."""
    view = memoryview(out)
    pos = 0
    while pos < out.size:
        got = stream.readinto(view[pos:pos + _CHUNK])
        if not got:
            raise fail(f"truncated parameters ({pos} of {out.size} bytes)")
        pos += got


def _parse_meta(raw, fail):
    """(metadata object, format version) of the metadata entry's bytes, every
    field of the format present with its type."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"corrupt metadata (not UTF-8: {e})") from None
    try:
        meta = _parse_json(text, MAX_JSON_DEPTH)
    except ValueError as e:
        raise fail(f"corrupt metadata ({e})") from None
    if not isinstance(meta, dict):
        kind = {list: "an array", str: "a string"}.get(type(meta), "a value")
        raise fail(f"not a fastbp model file (the metadata is {kind}, not a JSON object)")
    if meta.get("format") != FORMAT:
        raise fail("not a fastbp model file (metadata lacks format 'fastbp-model')")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise fail(f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise fail(f"written in model format version {version}, newer than this fastbp "
                   f"reads ({FORMAT_VERSION}); upgrade fastbp to load it")
    missing, extra = sorted(_META_KEYS - set(meta)), sorted(set(meta) - _META_KEYS)
    if missing or extra:
        problems = ([f"missing fields {missing}"] if missing else []) + \
            ([f"unexpected fields {extra}"] if extra else [])
        raise fail(f"corrupt metadata ({', '.join(problems)})")
    types = {"fastbp_version": (str, "a string"), "network": (dict, "an object"),
             "n_params": (int, "an integer"), "dtype": (str, "a string"),
             "sha256": (str, "a string"), "metadata": ((dict, type(None)), "an object or null")}
    for key, (kind, described) in types.items():
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise fail(f"corrupt metadata ({key}: expected {described}, got {value!r:.60})")
    return meta, version


# ---------------------------------------------------------------------- JSON


def _parse_json(text: str, depth: int):
    """``json.loads`` within limits: nested at most ``depth`` deep (checked by a
    scan before parsing, as the parser recurses), integers of at most
    ``MAX_INT_DIGITS`` digits, no duplicate keys.  ValueError otherwise."""
    level = 0
    for m in _JSON_TOKEN.finditer(text):
        c = text[m.start()]
        if c in "[{":
            level += 1
            if level > depth:
                raise ValueError(f"nested more than {depth} levels deep")
        elif c in "]}":
            level -= 1
        elif m.end() - m.start() == 1:  # an unterminated string: the parser stops there too
            break
    return json.loads(text, parse_int=_json_int, object_pairs_hook=_json_object)


def _json_int(digits: str) -> int:
    # bounded here, whatever sys.set_int_max_str_digits says (int() is quadratic)
    n = len(digits) - digits.startswith("-")
    if n > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {n} digits, more than {MAX_INT_DIGITS}")
    return int(digits)


def _json_object(pairs) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {duplicate!r}")
    return obj


def _canonical_json(obj) -> bytes:
    """The one serialization the checksum covers: sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=True).encode("ascii")


def _checksum(version: int, meta: dict, theta: np.ndarray) -> str:
    """Hex SHA-256 of a file's contents: version 1, theta's bytes; version 2, the
    canonical JSON of every field of ``meta`` but ``sha256``, a NUL byte (which
    that JSON never holds) and theta's bytes."""
    h = hashlib.sha256()
    if version >= 2:
        h.update(_canonical_json({k: v for k, v in meta.items() if k != "sha256"}))
        h.update(b"\0")
    h.update(theta.view(np.uint8))
    return h.hexdigest()


def _portable_metadata(metadata):
    """``metadata`` as it will read back (through JSON, with ``load``'s limits),
    so that the checksum ``save`` writes is the one ``load`` computes."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata: expected a dict, got {type(metadata).__name__}")
    try:
        text = json.dumps(metadata)
    except RecursionError:
        raise ValueError(f"metadata: nested more than {MAX_JSON_DEPTH - 1} levels "
                         "deep") from None
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata: not JSON-serializable ({e})") from None
    try:
        # one level less than a file allows: the file's own object holds it
        return _parse_json(text, MAX_JSON_DEPTH - 1)
    except ValueError as e:
        raise ValueError(f"metadata: {e}") from None


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be
    opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
