"""Reading audio for the audio-driven models (HunyuanCustom audio, HunyuanVideo-Avatar, HuMo): mono float32 at
16 kHz, the rate their Whisper front ends take.

The references load audio with ``librosa.load(path, sr=16000)``: soundfile decoding (integer PCM scaled by
``1 / 2**(bits-1)``), the channels averaged, then ``soxr_hq`` resampling when the file is not at 16 kHz.
``load_audio`` reproduces that exactly for 16 kHz input: same scaling, same channel mean. Other rates are
resampled here with a numpy windowed-sinc resampler (``resample``), not soxr, so resampled input differs
slightly from the reference (both are high-quality band-limited resamplers; the difference is in the last
percent of the band and a small ripple, far below anything Whisper resolves, but it is not bit parity). Resample
to 16 kHz beforehand (``ffmpeg -i in.wav -ar 16000 out.wav`` or with soxr) when exact reference inputs matter.

WAV files (``RIFF``/``WAVE``: integer PCM 8/16/24/32-bit, IEEE float 32/64-bit, also ``WAVE_FORMAT_EXTENSIBLE``)
are parsed here with numpy alone. Anything else (mp3, flac, m4a, the audio track of a video, ...) is decoded by
the ffmpeg binary shipped with ``imageio-ffmpeg`` to 32-bit float WAV at its native rate and channel count, then
goes through the same averaging and resampling.

``frames_of_audio`` is the references' frame count: ``len(samples) // 640`` at 25 fps and 16 kHz.
"""

from __future__ import annotations

import math
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

from hcjax.io.video import MediaError

PathLike = str | os.PathLike

SAMPLE_RATE = 16000
"""The rate of every Whisper front end."""

_FIX = ("convert it to a WAV file, e.g. `ffmpeg -i INPUT -ac 1 -ar 16000 -c:a pcm_s16le OUTPUT.wav`")
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def frames_of_audio(num_samples: int, fps: float = 25, sample_rate: int = SAMPLE_RATE) -> int:
    """Whole video frames covered by ``num_samples`` audio samples: ``floor(num_samples * fps / sample_rate)``,
    in exact rational arithmetic (``num_samples // 640`` for the references' 25 fps at 16 kHz)."""
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0; got {num_samples}")
    if fps <= 0 or sample_rate <= 0:
        raise ValueError(f"fps and sample_rate must be positive; got fps={fps}, sample_rate={sample_rate}")
    fps_q = Fraction(fps).limit_denominator(1_000_000)
    return math.floor(Fraction(int(num_samples)) * fps_q / int(sample_rate))


def _parse_wav(data: bytes, what: str) -> tuple[np.ndarray, int]:
    """``(samples [N, channels] float32, sample rate)`` of WAV bytes; ``what`` names the source in errors."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaError(f"cannot decode audio {what}: not a RIFF/WAVE file; {_FIX}")
    fmt = None
    payload = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body = pos + 8
        if chunk_id == b"data":
            # streamed WAV (ffmpeg to a pipe) leaves the size at 0xFFFFFFFF; truncated files claim more than is there
            end = len(data) if size == 0xFFFFFFFF or body + size > len(data) else body + size
            payload = data[body:end]
            if fmt is not None:
                break
        elif chunk_id == b"fmt ":
            if size < 16 or body + size > len(data):
                raise MediaError(f"cannot decode audio {what}: malformed 'fmt ' chunk; {_FIX}")
            def field(offset, width):
                return int.from_bytes(data[body + offset:body + offset + width], "little")

            tag, channels, rate, block_align, bits = field(0, 2), field(2, 2), field(4, 4), field(12, 2), field(14, 2)
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                tag = field(24, 2)  # the first 2 bytes of the sub-format GUID
            fmt = (tag, channels, rate, block_align, bits)
            if payload is not None:
                break
        if size == 0xFFFFFFFF:
            break
        pos = body + size + (size & 1)  # chunks are word aligned
    if fmt is None or payload is None:
        missing = "'fmt '" if fmt is None else "'data'"
        raise MediaError(f"cannot decode audio {what}: WAV without a {missing} chunk (truncated?); {_FIX}")
    tag, channels, rate, block_align, bits = fmt
    width = bits // 8
    if channels < 1 or rate < 1 or bits % 8 or block_align != channels * width:
        raise MediaError(f"cannot decode audio {what}: inconsistent WAV header (channels {channels}, rate {rate}, "
                         f"{bits} bits, block align {block_align}); {_FIX}")
    n = len(payload) // block_align
    raw = np.frombuffer(payload, np.uint8, n * block_align)
    if tag == _WAVE_FORMAT_PCM and bits == 8:
        x = (raw.astype(np.float32) - 128.0) / 128.0
    elif tag == _WAVE_FORMAT_PCM and bits in (16, 32):
        x = raw.view(f"<i{width}").astype(np.float64) / float(2 ** (bits - 1))
    elif tag == _WAVE_FORMAT_PCM and bits == 24:
        b = raw.reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend the 24-bit value
        x = ints.astype(np.float64) / float(2 ** 23)
    elif tag == _WAVE_FORMAT_IEEE_FLOAT and bits in (32, 64):
        x = raw.view(f"<f{width}")
    else:
        kind = {_WAVE_FORMAT_PCM: "integer PCM", _WAVE_FORMAT_IEEE_FLOAT: "float"}.get(tag, f"format tag {tag:#x}")
        raise MediaError(f"cannot decode audio {what}: unsupported WAV encoding ({kind}, {bits} bits); {_FIX}")
    return np.asarray(x, np.float32).reshape(n, channels), rate


def read_wav(path: PathLike) -> tuple[np.ndarray, int]:
    """``(samples [N, channels] float32 in [-1, 1], sample rate)`` of a WAV file, integer PCM scaled as
    soundfile/librosa do (``x / 2**(bits-1)``; 8-bit ``(x - 128) / 128``)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"no audio file at {path}; check the path")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MediaError(f"cannot read audio {path}: {e}; check its permissions") from e
    return _parse_wav(data, str(path))


def _decode_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    """Any format ffmpeg reads -> its first audio stream as float WAV (native rate and channels), parsed."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # not installed, or no binary for this platform
        raise MediaError(f"cannot decode audio {path}: not a WAV file and no ffmpeg is available ({e}); "
                         f"{_FIX}") from e
    cmd = [exe, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn", "-c:a", "pcm_f32le",
           "-f", "wav", "-"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0 or not proc.stdout:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"ffmpeg exited with code {proc.returncode}"
        raise MediaError(f"cannot decode audio {path}: {why}; check that it is an audio file (or a video with an "
                         f"audio track), or {_FIX}")
    return _parse_wav(proc.stdout, str(path))


def _kaiser_sinc_table(up: int, down: int, zero_crossings: int, rolloff: float, beta: float):
    """Per-phase FIR weights ``[up, taps]`` and the tap offset of the polyphase resampler (see ``resample``)."""
    cutoff = rolloff * min(1.0, up / down)  # as a fraction of the input Nyquist frequency
    half = math.ceil(zero_crossings / cutoff)  # half width in input samples
    k = np.arange(-half, half + 2)  # input offsets relative to floor(output position)
    u = np.arange(up)[:, None] / up - k[None, :]  # output position minus input sample, in input samples
    arg = np.clip(u * cutoff / zero_crossings, -1.0, 1.0)
    window = np.i0(beta * np.sqrt(1.0 - arg * arg)) / np.i0(beta)
    window[np.abs(u * cutoff) > zero_crossings] = 0.0
    weights = cutoff * np.sinc(cutoff * u) * window
    weights /= weights.sum(axis=1, keepdims=True)  # unit DC gain in every phase
    return weights, -half


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE, *, zero_crossings: int = 16,
             rolloff: float = 0.95, beta: float = 8.0) -> np.ndarray:
    """Band-limited resampling of ``audio [N]`` or ``[N, channels]`` (time first) from ``orig_sr`` to
    ``target_sr``; float32 out, ``ceil(N * target_sr / orig_sr)`` samples (librosa's output length).

    Method: polyphase Kaiser-windowed sinc (numpy only). Output sample ``m`` sits at input time
    ``m * orig_sr / target_sr`` (no delay, as soxr and librosa); the low-pass cuts at ``rolloff`` times the lower
    of the two Nyquist frequencies, the sinc is truncated at ``zero_crossings`` of its lobes under a Kaiser window
    of shape ``beta`` (about 80 dB stop band), and each phase is normalised to unit DC gain. Samples outside the
    signal count as zero. The references resample with soxr (``librosa.load``, ``res_type="soxr_hq"``): both are
    linear-phase band-limited resamplers, but this one is not bit-compatible with it."""
    x = np.asarray(audio)
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive; got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return x.astype(np.float32, copy=True)
    g = math.gcd(int(orig_sr), int(target_sr))
    up, down = int(target_sr) // g, int(orig_sr) // g
    n_in = x.shape[0]
    n_out = -(-n_in * up // down)
    weights, first = _kaiser_sinc_table(up, down, zero_crossings, rolloff, beta)
    taps = weights.shape[1]
    flat = x.reshape(n_in, -1).astype(np.float64)
    padded = np.concatenate([np.zeros((-first, flat.shape[1])), flat, np.zeros((taps, flat.shape[1]))])
    out = np.empty((n_out, flat.shape[1]), np.float64)
    chunk = max(1, (1 << 22) // taps)
    for start in range(0, n_out, chunk):
        m = np.arange(start, min(n_out, start + chunk))
        base = m * down // up  # floor of the output position, in input samples
        phase = m * down % up
        idx = base[:, None] + np.arange(taps)[None, :]  # into `padded`, which starts at input index `first`
        out[m] = np.einsum("mt,mtc->mc", weights[phase], padded[idx])
    return out.reshape((n_out,) + x.shape[1:]).astype(np.float32)


def load_audio(path: PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The audio of ``path`` as mono float32 ``[N]`` at ``sample_rate`` (16 kHz: what every Whisper front end
    takes). Channels are averaged; other rates are resampled with ``resample``.

    Matches the references' ``librosa.load(path, sr=16000)`` exactly for 16 kHz files (same integer scaling and
    channel mean); files at other rates go through this module's windowed-sinc resampler where librosa uses
    soxr_hq, so they differ slightly from the reference (see the module docstring). Raises ``MediaError`` naming
    the path and the fix for a missing, unreadable, undecodable or empty file."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"no audio file at {path}; check the path")
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise MediaError(f"cannot read audio {path}: {e}; check its permissions") from e
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        samples, rate = read_wav(path)
    else:
        samples, rate = _decode_with_ffmpeg(path)
    if samples.shape[0] == 0:
        raise MediaError(f"audio {path} has no samples; check the file (it decodes to an empty stream)")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if rate != sample_rate:
        mono = resample(mono, rate, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


__all__ = ["SAMPLE_RATE", "frames_of_audio", "load_audio", "read_wav", "resample"]
