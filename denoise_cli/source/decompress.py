"""Decompressed blocks of one input file, with truncation and corruption detected.

:class:`Stream` reads a local file or URL as a stream (zstd through ``stream_reader(...,
read_across_frames=True).read1``, gzip through ``GzipFile.read1``, plain unbuffered), so memory
is bounded by the block size and data decoded before a corrupt spot is handed out before the
error surfaces. A leading UTF-8 BOM is dropped. zstandard silently returns EOF on a truncated
frame, so the compressed bytes pass through :class:`ZstdFrameWalker`, which walks frame and
block headers (skipping block bodies) and knows at EOF whether the last frame ended. Every
failure becomes one :class:`StreamError` with a reason (``corrupt_stream``,
``truncated_stream``, ``unreadable``) and the byte offset; :mod:`denoise_cli.source.read` turns
it into file statistics or an ``InputError``. Details: docs/input.md.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable
from typing import IO, cast

import zstandard

from .discover import InputFile
from .fingerprint import SourceDigest, hash_stream
from .fs import is_url, open_remote

BLOCK_SIZE = 4 << 20  # decompressed bytes asked for per read
_BOM = b"\xef\xbb\xbf"
ZSTD_READ_SIZE = 1 << 20  # compressed bytes the zstd reader pulls from the file per read


class StreamError(Exception):
    """A stream failure inside the reader; :mod:`denoise_cli.source.read` turns it into
    ``FileStats.error`` or an :class:`~denoise_cli.errors.InputError` (never seen outside)."""

    def __init__(self, reason: str, offset: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # "corrupt_stream" | "truncated_stream" | "unreadable"
        self.offset = offset
        self.detail = detail


_ZSTD_MAGIC = 0xFD2FB528
_FCS_SIZES = (0, 2, 4, 8)
_DID_SIZES = (0, 1, 2, 4)


class ZstdFrameWalker:
    """Walks zstd frame/block headers as compressed bytes stream past (RFC 8878), to tell at EOF
    whether the last frame was complete. Block bodies are skipped, never copied."""

    __slots__ = (
        "_checksum",
        "_hdr",
        "_hdr_start",
        "_need",
        "_skip",
        "_state",
        "frame_start",
        "lost",
        "lost_at",
        "pos",
    )

    # states: which header is being collected
    _MAGIC, _FHD, _HEADER_REST, _BLOCK, _SKIP_SIZE = range(5)

    def __init__(self) -> None:
        self._state = self._MAGIC
        self._need = 4
        self._hdr = b""
        self._skip = 0
        self._checksum = False
        self.pos = 0  # compressed bytes seen
        self.frame_start = 0  # offset of the frame being walked
        self.lost = False  # met bytes it does not understand; libzstd will judge
        self.lost_at = -1  # offset of the header it did not understand
        self._hdr_start = 0

    def feed(self, data: bytes) -> None:
        n = len(data)
        i = 0
        base = self.pos
        self.pos += n
        if self.lost:
            return
        while True:
            if self._skip:
                take = min(self._skip, n - i)
                i += take
                self._skip -= take
                if self._skip:
                    return
            if i >= n:
                return
            if not self._hdr:
                self._hdr_start = base + i
                if self._state == self._MAGIC:
                    self.frame_start = base + i
            want = self._need - len(self._hdr)
            self._hdr += data[i : i + want]
            i += want
            if len(self._hdr) < self._need:
                return
            if not self._advance():
                self.lost, self.lost_at = True, self._hdr_start
                return

    def _advance(self) -> bool:
        """Consume the collected header; False when it is not valid zstd framing."""
        h = self._hdr
        self._hdr = b""
        st = self._state
        if st == self._MAGIC:
            magic = int.from_bytes(h, "little")
            if magic == _ZSTD_MAGIC:
                self._state, self._need = self._FHD, 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._state, self._need = self._SKIP_SIZE, 4
            else:
                return False
        elif st == self._FHD:
            fhd = h[0]
            single = (fhd >> 5) & 1
            self._checksum = bool((fhd >> 2) & 1)
            fcs = _FCS_SIZES[fhd >> 6] or (1 if single else 0)
            rest = (0 if single else 1) + _DID_SIZES[fhd & 3] + fcs
            if rest:
                self._state, self._need = self._HEADER_REST, rest
            else:
                self._state, self._need = self._BLOCK, 3
        elif st == self._HEADER_REST:
            self._state, self._need = self._BLOCK, 3
        elif st == self._BLOCK:
            bh = int.from_bytes(h, "little")
            last, btype, bsize = bh & 1, (bh >> 1) & 3, bh >> 3
            if btype == 3:
                return False
            self._skip = 1 if btype == 1 else bsize
            if last:
                self._skip += 4 if self._checksum else 0
                self._state, self._need = self._MAGIC, 4
        else:  # skippable frame size
            self._skip = int.from_bytes(h, "little")
            self._state, self._need = self._MAGIC, 4
        return True

    @property
    def complete(self) -> bool:
        """True when the bytes so far end exactly at a frame boundary (or are undecidable)."""
        return self.lost or (self._state == self._MAGIC and not self._hdr and not self._skip)


class _CountingSource:
    """The compressed file as seen by a decompressor: counts bytes, feeds the frame walker."""

    def __init__(
        self,
        raw: io.RawIOBase,
        walker: ZstdFrameWalker | None,
        digest: SourceDigest | None = None,
    ) -> None:
        self._raw = raw
        self._walker = walker
        self._digest = digest
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        b = self._raw.read(n)
        if not b:
            return b""
        self.count += len(b)
        if self._walker is not None:
            self._walker.feed(b)
        if self._digest is not None:
            self._digest.update(b)
        return b

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()


class Stream:
    """Decompressed blocks of one file: :meth:`read` returns ``b""`` at a clean end and raises
    :class:`StreamError` on a corrupt, truncated or unreadable stream."""

    def __init__(self, f: InputFile, digest: SourceDigest | None = None) -> None:
        self.f = f
        self.walker: ZstdFrameWalker | None = None
        try:
            if is_url(f.path):
                raw = cast(io.RawIOBase, open_remote(f.path, f.storage_options))
            else:
                raw = open(f.path, "rb", buffering=0)
        except OSError as e:
            raise StreamError("unreadable", 0, f"cannot open: {e.strerror or e}") from None
        if f.compression == "zst":
            self.walker = ZstdFrameWalker()
        self.src = _CountingSource(raw, self.walker, digest)
        self._started = False
        self._read: Callable[[int], bytes]
        self._closer: Callable[[], None]
        if f.compression == "zst":
            reader = zstandard.ZstdDecompressor().stream_reader(
                cast(IO[bytes], self.src),
                read_size=ZSTD_READ_SIZE,
                read_across_frames=True,
                closefd=True,
            )
            self._read, self._closer = reader.read1, reader.close
        elif f.compression == "gz":
            gz = gzip.GzipFile(filename=f.path, mode="rb", fileobj=cast(IO[bytes], self.src))
            self._read = gz.read1

            def close_gz() -> None:
                gz.close()
                self.src.close()

            self._closer = close_gz
        else:
            self._read, self._closer = self.src.read, self.src.close

    @property
    def bytes_read(self) -> int:
        return self.src.count

    def read(self) -> bytes:
        """The next decompressed block (``b""`` at the end); a leading UTF-8 BOM is dropped."""
        block = self._read_block()
        if not self._started:
            self._started = True
            while block and len(block) < len(_BOM) and _BOM.startswith(block):
                more = self._read_block()
                if not more:
                    break
                block += more
            if block.startswith(_BOM):
                block = block[len(_BOM) :] or self._read_block()
        return block

    def _read_block(self) -> bytes:
        try:
            block = self._read(BLOCK_SIZE)
        except EOFError as e:
            raise StreamError(
                "truncated_stream", self.src.count, f"truncated gzip stream ({e})"
            ) from None
        except (zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as e:
            detail = f"corrupt {self._kind} ({e})"
            if self.walker is not None and self.walker.lost:
                detail += f"; zstd framing breaks at byte {self.walker.lost_at}"
            raise StreamError("corrupt_stream", self.src.count, detail) from None
        except OSError as e:
            raise StreamError(
                "unreadable", self.src.count, f"read error: {e.strerror or e}"
            ) from None
        except Exception as e:  # anything else a decompressor may throw at bad data
            raise StreamError(
                "corrupt_stream", self.src.count, f"corrupt {self._kind} ({e!r})"
            ) from None
        if not block:
            w = self.walker
            if w is not None and not w.complete:
                raise StreamError(
                    "truncated_stream",
                    w.pos,
                    f"truncated zstd stream: file ends at byte {w.pos} inside the frame "
                    f"starting at byte {w.frame_start}",
                )
        return block

    @property
    def _kind(self) -> str:
        return {"zst": "zstd stream", "gz": "gzip stream", "none": "file"}[self.f.compression]

    def close(self) -> None:
        try:
            self._closer()
        except Exception:  # closing a broken stream may complain again; nothing to do
            pass


def open_input(f: InputFile) -> IO[bytes]:
    """Open an input file (local path or URL) for reading raw bytes."""
    if is_url(f.path):
        return open_remote(f.path, f.storage_options)
    return open(f.path, "rb", buffering=0)


def hash_whole_file(f: InputFile, digest: SourceDigest) -> None:
    """Feed every byte of ``f`` into ``digest`` (an unreadable file is left to the reader)."""
    try:
        with open_input(f) as fh:
            hash_stream(fh, digest)
    except OSError:
        pass
