"""Video files made the way users' files are made, with PyAV only (no ffmpeg binary, no downloads).

Readable kinds (a player shows every frame of them):
  plain.mp4                H.264 with B-frames, a keyframe every 12 frames
  cut_editlist.mp4         a stream-copy cut, as `ffmpeg -ss 2.3 -i in.mp4 -t 2 -c copy out.mp4`
                           writes it: the packets back to the previous keyframe are kept and an
                           edit list hides them (they are marked discarded when demuxed)
  audio_longer.webm        VP9 + Opus, the audio twice as long as the video (the container's
                           duration x fps overcounts the video frames)
  audio_longer.mkv         H.264 + AAC in Matroska, likewise
  hevc.mp4, av1.mkv        HEVC (libx265) and AV1 (libsvtav1), where this PyAV can encode them
  vfr.mp4                  variable frame rate: 40 ms gaps, every third 100 ms
  rotated.mp4              portrait phone video: landscape frames + a 90 degree display matrix
  'clip, take 2.mp4', 'my clip.mp4', 'vidéo 東京.mp4'
                           plain videos under names with a comma, spaces, non-ASCII letters
Unreadable kinds, each with the reason a user must be told (a regular expression):
  truncated_index_at_end.mp4    an interrupted download of a file whose index (moov) comes last
  truncated_index_at_front.mp4  the same of a 'faststart' file: the header promises every frame
  truncated.webm                a cut-off WebM
  empty.mp4                     zero bytes
  subtitles.mp4                 a text file under a video name
  audio_only.mp4                AAC audio and no video stream
  random_bytes.mp4              binary junk under a video name
"""
from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction

import av
import numpy as np

from input_pipelines import synthetic_videos

SIZE, FRAMES, FPS = 64, 60, 25
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only (it prints its banner otherwise)


def _frames(seed: int, num_frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng([77, seed])
    spec = synthetic_videos.sample_scene(rng, size, num_frames)
    frames = synthetic_videos.render(spec, size, num_frames, rng)  # (T, S, S, 3)
    # A frame-number stripe: the top 8 rows at grey level 20 + (47 t mod 216), so consecutive
    # frames differ by 47 levels or more and a shifted or reordered frame shows.
    frames[:, :8] = (20 + (47 * np.arange(num_frames)) % 216)[:, None, None, None]
    return frames


def _encode(frames: np.ndarray, fmt: str = "mp4", codec: str = "libx264", *,
            audio_seconds: float = 0.0, audio_codec: str = "aac", faststart: bool = False,
            options: dict | None = None, pts: list[int] | None = None,
            time_base: Fraction | None = None, rotation: int = 0) -> bytes:
    """Encode frames (T, H, W, 3) into a container, optionally with a silent audio track."""
    with tempfile.TemporaryDirectory() as tmp:  # faststart rewrites the file: needs a path
        path = os.path.join(tmp, f"v.{fmt}")
        container_options = {"movflags": "faststart"} if faststart else {}
        with av.open(path, "w", format=fmt, options=container_options) as c:
            s = c.add_stream(codec, rate=FPS)
            s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            s.options = dict(options or {})
            if time_base is not None:
                s.codec_context.time_base = time_base
            if rotation:
                s.set_display_rotation(rotation)
            a = c.add_stream(audio_codec, rate=48000) if audio_seconds else None
            for t, frame in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                if pts is not None:
                    vf.pts, vf.time_base = pts[t], time_base
                c.mux(s.encode(vf))
            c.mux(s.encode(None))
            if a is not None:
                samples = 960
                for i in range(int(audio_seconds * 48000) // samples):
                    af = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32),
                                                    format="fltp", layout="mono")
                    af.sample_rate, af.pts = 48000, i * samples
                    c.mux(a.encode(af))
                c.mux(a.encode(None))
        with open(path, "rb") as f:
            return f.read()


def stream_copy_cut(data: bytes, start: float, duration: float) -> bytes:
    """What `ffmpeg -ss START -i in.mp4 -t DURATION -c copy out.mp4` writes: the packets from the
    keyframe at or before START, timestamps shifted so START is 0 (the pre-roll negative), which
    the mp4 muxer hides behind an edit list."""
    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(out, "w", format="mp4") as dst:
        s = src.streams.video[0]
        o = dst.add_stream_from_template(s)
        t0, t1 = int(start / s.time_base), int((start + duration) / s.time_base)
        src.seek(t0, stream=s, backward=True, any_frame=False)
        for p in src.demux(s):
            if p.pts is None or p.pts >= t1:
                continue
            p.pts -= t0
            p.dts -= t0
            p.stream = o
            dst.mux(p)
    return out.getvalue()


def audio_only() -> bytes:
    """An mp4 of AAC audio and no video stream."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return buf.getvalue()


def _vfr() -> bytes:
    gaps = [100 if i % 3 == 0 else 40 for i in range(FRAMES)]
    pts = np.concatenate([[0], np.cumsum(gaps[:-1])]).tolist()  # milliseconds
    return _encode(_frames(6), pts=pts, time_base=Fraction(1, 1000),
                   options={"g": "12", "bf": "2"})


def can_encode(codec: str) -> bool:
    return codec in av.codecs_available


def readable_files() -> dict[str, bytes]:
    """{file name: bytes} of every readable kind this PyAV can write."""
    bframes = {"g": "12", "bf": "2"}
    plain = _encode(_frames(0), options=bframes)
    long_source = _encode(_frames(1, num_frames=150), options=bframes)  # 6 s
    files = {
        "plain.mp4": plain,
        "cut_editlist.mp4": stream_copy_cut(long_source, 2.3, 2.0),
        "audio_longer.webm": _encode(_frames(2), "webm", "libvpx-vp9", audio_seconds=4.8,
                                     audio_codec="libopus", options={"g": "12"}),
        "audio_longer.mkv": _encode(_frames(3), "matroska", audio_seconds=4.8, options=bframes),
        "vfr.mp4": _vfr(),
        "rotated.mp4": _encode(np.ascontiguousarray(_frames(7)[:, 8:56]), rotation=90),
        "clip, take 2.mp4": _encode(_frames(8, 30)),
        "my clip.mp4": _encode(_frames(9, 30)),
        "vidéo 東京.mp4": _encode(_frames(10, 30)),
    }
    if can_encode("libx265"):
        files["hevc.mp4"] = _encode(_frames(4), codec="libx265",
                                    options={"x265-params": "log-level=none:keyint=12"})
    if can_encode("libsvtav1"):
        files["av1.mkv"] = _encode(_frames(5), "matroska", "libsvtav1",
                                   options={"preset": "12", "g": "12"})
    return files


# name -> (bytes, the reason the user must read, as a regular expression)
def unreadable_files() -> dict[str, tuple[bytes, str]]:
    moov_last = _encode(_frames(11))
    moov_first = _encode(_frames(11), faststart=True)
    webm = _encode(_frames(12), "webm", "libvpx-vp9")
    return {
        "truncated_index_at_end.mp4": (moov_last[: len(moov_last) * 4 // 10],
                                       rf"truncated at byte {len(moov_last) * 4 // 10} of at "
                                       rf"least \d+ .*index \(moov box\) is missing"),
        "truncated_index_at_front.mp4": (moov_first[: len(moov_first) * 4 // 10],
                                         rf"truncated at byte {len(moov_first) * 4 // 10} of "
                                         rf"at least {len(moov_first)}"),
        "truncated.webm": (webm[: len(webm) // 2],
                           rf"truncated at byte {len(webm) // 2} of {len(webm)}"),
        "empty.mp4": (b"", r"empty file \(0 bytes\)"),
        "subtitles.mp4": (b"1\n00:00:01,000 --> 00:00:02,000\nHello\n",
                          r"not a video file: it is text"),
        "audio_only.mp4": (audio_only(), r"no video stream \(streams: audio aac\)"),
        "random_bytes.mp4": (np.random.default_rng(5).integers(0, 256, 4096, np.uint8).tobytes(),
                             r"not a media file FFmpeg can read \(4096 bytes"),
    }


def write_folder(root: str) -> tuple[dict[str, str], dict[str, str]]:
    """Write every kind under root, and `list.txt` (tab-separated `path<TAB>label`) naming all of
    them. Returns ({readable name: path}, {unreadable name: reason pattern})."""
    readable, unreadable = {}, {}
    lines = []
    for i, (name, data) in enumerate(sorted(readable_files().items())):
        path = os.path.join(root, name)
        with open(path, "wb") as f:
            f.write(data)
        readable[name] = path
        lines.append(f"{name}\t{i % 4}")
    for name, (data, reason) in sorted(unreadable_files().items()):
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        unreadable[name] = reason
        lines.append(f"{name}\t0")
    with open(os.path.join(root, "list.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return readable, unreadable
