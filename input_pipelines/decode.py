"""Decode selected frames of an encoded video with PyAV, seeking to the span that is needed.

Frame i of a video is the i-th frame a player shows: the frames in presentation order of the
first video stream, without the packets an edit list hides (a stream-copy cut such as
`ffmpeg -ss 2.3 -i in.mp4 -t 4 -c copy out.mp4` keeps the packets back to the previous keyframe
and marks them discarded). The frame table comes from demuxing, which reads packets without
decoding them, so counting frames never trusts a container's duration x frame rate (WebM/MKV
durations cover the longest stream, e.g. audio that outlasts the video).

A file that cannot be used raises DecodeError with the reason in words: an empty file, not a
media file, truncated at byte N of M (from the container's own box / element sizes), no video
stream, fewer frames than the header declares, or the frames that did not decode.
"""
from __future__ import annotations

import io
import struct
import threading
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

# Creating a pixel-format converter per frame costs more than decoding a small frame; one converter
# per thread is reused (it caches its SwsContext for a given size/format), ~5x faster to RGB.
_local = threading.local()


def quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns (0-3) that display the frame upright.

    From the display matrix the container attaches to the frames (phones record portrait video as
    landscape frames plus a rotation). Angles are rounded to the nearest multiple of 90 degrees;
    mirroring in the matrix is not applied.
    """
    return int(round(frame.rotation / 90.0)) % 4


def display_size(frame: av.VideoFrame) -> tuple[int, int]:
    """(width, height) of the frame as displayed, i.e. after its rotation metadata."""
    if quarter_turns(frame) % 2:
        return frame.height, frame.width
    return frame.width, frame.height


def to_rgb(frame: av.VideoFrame, width: int | None = None, height: int | None = None,
           interpolation: str = "BILINEAR") -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded frame, upright (rotation metadata applied).

    With width/height (display orientation), the frame is scaled in the same pass as the colour
    conversion (swscale, with this thread's reused converter; `interpolation` names the swscale
    filter: BILINEAR, FAST_BILINEAR, AREA, ...).
    """
    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    turns = quarter_turns(frame)
    if turns % 2:  # the stored frame is the display frame transposed
        width, height = height, width
    rgb = reformatter.reformat(frame, width=width, height=height, format="rgb24",
                               interpolation=interpolation).to_ndarray()
    return np.rot90(rgb, turns) if turns else rgb  # (H, W, 3), a view when rotated


class DecodeError(RuntimeError):
    """A video could not be opened or the requested frames could not be decoded; the message
    says why in words (empty, not a media file, truncated at byte N of M, ...)."""


# --- What the bytes say, before FFmpeg is asked ---------------------------------------------------

_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"moof",
              b"styp", b"sidx", b"meta", b"pdin", b"mfra"}
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_SEGMENT = b"\x18\x53\x80\x67"


def _mp4_truncation(data: bytes) -> str | None:
    """Walk the top-level boxes of an ISO-BMFF file (mp4/mov/m4v/3gp); a box that declares more
    bytes than the file holds means the file was cut off. None when the boxes fit."""
    pos, names = 0, []
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:  # 64-bit size follows
            if pos + 16 > len(data):
                break
            size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:  # the box runs to the end of the file
            names.append(kind)
            break
        if size < header:
            return None  # not a box structure we can read: let FFmpeg judge
        names.append(kind)
        if pos + size > len(data):
            where = kind.decode("latin-1")
            tail = "" if b"moov" in names else "; its index (moov box) is missing"
            return (f"truncated at byte {len(data)} of at least {pos + size} (the '{where}' box "
                    f"at byte {pos} declares {size} bytes{tail}): an incomplete download or "
                    f"recording")
        pos += size
    if names and b"moov" not in names and b"moof" not in names:
        return (f"no index (moov box) in its {len(data)} bytes, boxes "
                f"{[n.decode('latin-1') for n in names]}: truncated before the index was written "
                f"(an incomplete download or an interrupted recording)")
    return None


def _ebml_vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at pos: (value, length), or None if cut off."""
    if pos >= len(data) or data[pos] == 0:
        return None
    length = 8 - data[pos].bit_length() + 1
    if pos + length > len(data):
        return None
    value = int.from_bytes(data[pos:pos + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
    return value, length


def _matroska_truncation(data: bytes) -> str | None:
    """The Segment element of a Matroska/WebM file declares its size (unless written live):
    a Segment larger than the file means it was cut off."""
    pos = 0
    for expected in (_EBML_MAGIC, _EBML_SEGMENT):
        got = _ebml_vint(data, pos, keep_marker=True)
        if got is None:
            return f"truncated at byte {len(data)} inside its header"
        ident, n = got
        if ident.to_bytes(n, "big") != expected:
            return None
        size = _ebml_vint(data, pos + n, keep_marker=False)
        if size is None:
            return f"truncated at byte {len(data)} inside its header"
        value, m = size
        if expected == _EBML_SEGMENT:
            if value == (1 << (7 * m)) - 1:
                return None  # unknown size (a live recording): nothing to compare
            end = pos + n + m + value
            return (f"truncated at byte {len(data)} of {end} (the Matroska segment declares "
                    f"{value} bytes): an incomplete download or recording"
                    if end > len(data) else None)
        pos += n + m + value
    return None


def diagnose(data: bytes) -> str | None:
    """What is wrong with a file, judged from its bytes alone, or None if nothing is seen.

    Catches: an empty file; a file cut off before the end its container declares (mp4/mov box
    sizes, the Matroska/WebM segment size); an mp4 whose index was never written.
    """
    if not data:
        return "empty file (0 bytes)"
    if len(data) >= 8 and data[4:8] in _MP4_BOXES:
        return _mp4_truncation(data)
    if data[:4] == _EBML_MAGIC:
        return _matroska_truncation(data)
    return None


def _is_text(data: bytes) -> bool:
    head = data[:64]
    return bool(head) and all(32 <= b < 127 or b in b"\t\r\n" for b in head)


def _not_media(data: bytes, error: Exception) -> str:
    if _is_text(data):
        return f"not a media file (it starts with text: {data[:40].decode('ascii')!r})"
    why = getattr(error, "strerror", None) or str(error)
    return (f"not a media file FFmpeg can read ({len(data)} bytes, starting "
            f"{data[:12].hex(' ')}): {why}")


def _open(data: bytes) -> av.container.InputContainer:
    reason = diagnose(data)
    if reason:
        raise DecodeError(reason)
    try:
        return av.open(io.BytesIO(data), mode="r")
    except av.FFmpegError as e:
        raise DecodeError(_not_media(data, e)) from e


def _streams_summary(container) -> str:
    kinds = [f"{s.type} {s.codec_context.name}" for s in container.streams]
    return ", ".join(kinds) if kinds else "none"


class Video:
    """An opened encoded video: its frame table (demuxed once, nothing decoded) and decoding.

      with decode.Video(data) as video:
          idx = sampler(video.num_frames)          # or video.times, seconds per frame
          frames = video.frames(idx)               # av.VideoFrames, in the order of idx

    Attributes:
      num_frames: frames a player shows.
      pts: (num_frames,) int64 presentation timestamps of those frames, ascending, in time_base.
      times: (num_frames,) float64 seconds of each frame after the first shown frame.
      fps: the stream's average frame rate (frames per second; from the timestamps when the
        stream declares none).
      declared_frames: the frame count the container header declares (0 when it has none).
    Raises DecodeError: unreadable (see diagnose), no video stream, no frames, or fewer frames in
    the file than its header declares (a truncated download whose index is at the front).
    known_frames: a frame count verified earlier (by `pack`): the table is cut to it if longer.
    """

    def __init__(self, data: bytes, known_frames: int = 0):
        self._container = _open(data)
        try:
            self._index(data, int(known_frames or 0))
        except BaseException:
            self._container.close()
            raise

    def _index(self, data: bytes, known_frames: int) -> None:
        c = self._container
        if not c.streams.video:
            if _is_text(data):
                raise DecodeError(f"not a video file: it is text (FFmpeg reads it as "
                                  f"{_streams_summary(c)}), starting {data[:24].decode('ascii')!r}")
            raise DecodeError(f"no video stream (streams: {_streams_summary(c)})")
        s = self.stream = c.streams.video[0]
        s.thread_type = "AUTO"  # frame and slice threads, set before the decoder opens
        pts, keys, demuxed, error = [], [], 0, None
        try:
            for p in c.demux(s):
                if p.size == 0 and p.pts is None and p.dts is None:
                    continue  # the end-of-stream flush packet
                demuxed += 1
                if p.is_keyframe and (p.pts is not None or p.dts is not None):
                    # (pts, dts) of every keyframe, hidden ones too: a cut's pre-roll starts at one
                    keys.append((p.pts if p.pts is not None else p.dts,
                                 p.dts if p.dts is not None else p.pts))
                if getattr(p, "is_discard", False):
                    continue  # hidden by an edit list: not shown, not counted
                t = p.pts if p.pts is not None else p.dts
                if t is None:
                    raise DecodeError("packets without timestamps (a raw elementary stream?): "
                                      "remux it first, e.g. `ffmpeg -i IN -c copy OUT.mp4`")
                pts.append(t)
        except av.FFmpegError as e:
            error = e
        self.declared_frames = int(s.frames or 0)
        if error is not None:
            raise DecodeError(f"the file is damaged after {len(pts)} frames (byte "
                              f"{len(data)}): {error}")
        if self.declared_frames and demuxed < self.declared_frames:
            raise DecodeError(f"truncated: the header declares {self.declared_frames} frames, "
                              f"the file's {len(data)} bytes hold {demuxed} (an incomplete "
                              f"download whose index is at the front)")
        table = np.unique(np.asarray(pts, np.int64))  # presentation order
        if known_frames and known_frames < len(table):
            table = table[:known_frames]
        if not len(table):
            raise DecodeError("the video stream holds no frames")
        self.pts = table
        self._keyframes = sorted(keys)  # by presentation time
        self.time_base = Fraction(s.time_base) if s.time_base else Fraction(1, 1)
        self.times = (table - table[0]) * float(self.time_base)
        rate = s.average_rate or s.guessed_rate
        if rate:
            self.fps = float(rate)
        elif len(table) > 1:
            self.fps = (len(table) - 1) / self.times[-1]
        else:
            self.fps = 0.0

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def duration(self) -> float:
        """Seconds from the first shown frame to the end of the last (one frame period)."""
        return float(self.times[-1] + (1.0 / self.fps if self.fps else 0.0))

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def frames(self, indices) -> list[av.VideoFrame]:
        """Decode the frames at `indices` (any order, repeats allowed).

        Seeks to the keyframe before the first wanted frame and decodes forward to the last one.
        Returns av.VideoFrames in the codec's pixel format and stored orientation, in the order
        of `indices`; convert with to_rgb (which applies the rotation metadata). Keeping them
        unconverted lets several augmented views be made from one decode.
        Raises DecodeError naming the frames past the end, or the frames that did not decode.
        """
        indices = np.asarray(indices, dtype=np.int64).ravel()
        wanted_set = sorted(set(int(i) for i in indices))
        outside = [i for i in wanted_set if i < 0 or i >= self.num_frames]
        if outside:
            raise DecodeError(f"frames {_listing(outside)} requested from a video of "
                              f"{self.num_frames} frames")
        wanted = {int(self.pts[i]): i for i in wanted_set}
        first = int(self.pts[wanted_set[0]])
        got: dict[int, av.VideoFrame] = {}
        error = self._decode_from(self._seek_target(first), wanted, got)
        missing = [i for i in wanted_set if i not in got]
        if missing and self._keyframes:  # once more from the first keyframe, the slow sure way
            error = self._decode_from(self._keyframes[0][1], wanted, got) or error
            missing = [i for i in wanted_set if i not in got]
        if missing:
            done = max(got) if got else None
            raise DecodeError(
                f"frames {_listing(missing)} of {self.num_frames} did not decode"
                + (f" (the last decoded was {done})" if done is not None else "")
                + (f": {error}" if error else ": the stream is damaged there"))
        return [got[int(i)] for i in indices]

    def iter_frames(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """Every shown frame once, in presentation order, in one forward decode from the start:
        (index, av.VideoFrame) pairs (for a pass over a long video that `frames` would hold in
        memory at once). Raises DecodeError naming the first frame that did not decode."""
        index = {int(p): i for i, p in enumerate(self.pts)}
        expected = 0
        try:
            self._container.seek(self._seek_target(int(self.pts[0])), stream=self.stream,
                                 backward=True, any_frame=False)
            for frame in self._container.decode(self.stream):
                i = index.get(frame.pts) if frame.pts is not None else None
                if i is None or i < expected:
                    continue  # hidden by an edit list, or a repeat
                if i > expected:
                    break
                yield i, frame
                expected += 1
                if expected == self.num_frames:
                    return
        except av.FFmpegError as e:
            raise DecodeError(f"frame {expected} of {self.num_frames} did not decode: {e}") from e
        raise DecodeError(f"frames {expected}..{self.num_frames - 1} of {self.num_frames} did "
                          f"not decode (the stream is damaged there)")


    def _seek_target(self, first_pts: int) -> int:
        """A timestamp to seek to so that decoding starts at a keyframe shown at or before
        `first_pts`. The decode timestamp of that keyframe: container indexes (mp4) search by
        decode time, and seeking to the wanted frame's own time can land on a later keyframe
        whose decode time is earlier (B-frames), e.g. an HEVC open-GOP CRA picture, whose
        leading pictures (shown before it) cannot be decoded from it and are dropped."""
        best = None
        for key_pts, key_dts in self._keyframes:
            if key_pts > first_pts:
                break
            best = key_dts
        return first_pts if best is None else best

    def _decode_from(self, target: int, wanted: dict[int, int],
                     got: dict[int, av.VideoFrame]) -> Exception | None:
        """Seek to `target` (backward, to a keyframe) and decode until every frame in `wanted`
        ({pts: index}) not yet in `got` is there or the stream ends; the FFmpeg error, if any."""
        s = self.stream
        last = max(pts for pts, i in wanted.items() if i not in got)
        try:
            self._container.seek(target, stream=s, backward=True, any_frame=False)
            for frame in self._container.decode(s):
                if frame.pts is None:
                    continue
                if frame.pts in wanted and wanted[frame.pts] not in got:
                    got[wanted[frame.pts]] = frame
                if frame.pts >= last:
                    break
        except av.FFmpegError as e:
            return e
        return None


def _listing(values: list[int], limit: int = 12) -> str:
    """[a, b, ...] with at most `limit` values and a count of the rest."""
    shown = ", ".join(str(v) for v in values[:limit])
    more = f", ... ({len(values) - limit} more)" if len(values) > limit else ""
    return f"[{shown}{more}]"


def decode_frames(data: bytes, indices: np.ndarray) -> np.ndarray:
    """(K, H, W, 3) uint8 RGB frames at `indices`; see decode_video_frames."""
    with Video(data) as video:
        return np.stack([to_rgb(f) for f in video.frames(indices)])


def decode_video_frames(data: bytes, indices: np.ndarray) -> list[av.VideoFrame]:
    """The decoded frames at `indices` (0-based display order) of an encoded video (Video.frames).

    Args:
      data: the encoded container (mp4, webm, mkv, ...), as bytes.
      indices: (K,) int frame indices, any order, repeats allowed.
    Raises:
      DecodeError: unreadable, no video stream, an index past the last frame, or a wanted frame
        that did not decode.
    """
    with Video(data) as video:
        return video.frames(indices)


def probe(data: bytes) -> dict:
    """Facts of an encoded video from its frame table, without decoding.

    Returns {'num_frames' (shown frames), 'fps', 'duration' (s), 'width', 'height' (as stored,
    before rotation metadata), 'declared_frames' (the header's count, 0 if none)}.
    Raises DecodeError when the file cannot be used.
    """
    with Video(data) as v:
        return _facts(v)


def _facts(v: Video) -> dict:
    cc = v.stream.codec_context
    return {"num_frames": v.num_frames, "fps": v.fps, "duration": v.duration,
            "width": cc.width, "height": cc.height, "declared_frames": v.declared_frames}


def check(data: bytes, deep: bool = False, edge_frames: int = 2) -> dict:
    """Make sure a video can be used, as `validate` and `pack` do; returns probe()'s facts.

    Default: the frame table plus a decode of the first and last `edge_frames` frames (the end is
    where a cut-off file fails). deep: decode every frame. When frames fail to decode the error
    says which, and how many of the video's frames did decode.
    Raises DecodeError with the reason.
    """
    with Video(data) as v:
        n = v.num_frames
        k = min(edge_frames, n)
        # Each span decoded on its own: one seek to the last keyframe before the tail, not a
        # decode through the whole video.
        spans = [np.arange(n)] if deep else [np.arange(k), np.arange(n - k, n)]
        try:
            for span in spans:
                v.frames(span)
        except DecodeError as e:
            decodable = _count_decodable(data)
            raise DecodeError(f"{e}; {decodable} of its {n} frames decode") from e
        return _facts(v)


def _count_decodable(data: bytes) -> int:
    """Frames a plain sequential decode yields before it stops or fails."""
    count = 0
    try:
        with av.open(io.BytesIO(data)) as c:
            for _ in c.decode(video=0):
                count += 1
    except av.FFmpegError:
        pass
    return count
