"""The audio front end of the audio-driven models: 16 kHz samples -> Whisper log-mel -> Whisper encoder hidden
states -> per-video-frame (HunyuanCustom / HunyuanVideo-Avatar) or per-latent-frame (HuMo) windows.

Timing (all references): 16 kHz audio, 25 fps video, so one video frame is 640 samples; the log-mel hop is 160
samples (100 Hz, 4 mel frames per video frame); Whisper's ``conv2`` has stride 2, so its states run at 50 Hz
(2 encoder steps per video frame). The encoder takes exactly 3000 mel frames = 480,000 samples = 30 s.
``audio_len = len(samples) // 640`` is the number of whole video frames the audio covers.

**Log-mel** (``log_mel``): ``transformers.WhisperFeatureExtractor`` applied, as the references do, to consecutive
480,000-sample chunks (each zero-padded to 30 s) and concatenated: per chunk a centred STFT (``n_fft`` 400, hop 160,
periodic Hann window, reflect padding), power spectrum, Slaney-scale / Slaney-normalised mel filters from 0 to
8 kHz, ``log10(max(mel, 1e-10))``, the last frame dropped (3001 -> 3000), ``max(x, x.max() - 8)`` over the chunk,
``(x + 4) / 4``. Computed in float64 and returned as float32 ``[3000 * chunks, n_mels]`` (channels last). The
extractor itself computes the STFT in float32 (torch path, used whenever torch is installed, i.e. in the
references) or rounds it to complex64 (numpy path), so both differ from this float64 result by float32 rounding
only (relative L2 ~1e-7; tests/test_audio_features.py measures both).

**HunyuanCustom / HunyuanVideo-Avatar** (whisper-tiny, 5 hidden states of width 384, ``whisper_windows_custom``):
only the first 3000 mel frames (30 s) are encoded; the ``transformers`` 4.41 hidden-state list (embeddings +
positions, layers 1-3, final LayerNorm of layer 4) is stacked to ``[1500, 5, 384]``; 4 zero steps are prepended;
video frame ``f`` takes rows ``[2f, 2f + 10)`` of the padded array, i.e. encoder steps ``2f - 4 ... 2f + 5`` (the
20 ms steps from 80 ms before to 120 ms after the frame's start) -> ``[F, 10, 5, 384]``. Frames past the audio
(``f >= audio_len``) are zero, as the references zero-pad the frame axis up to the video length. Avatar also caps
the frame count at 400 (``task="avatar"``).

**HuMo** (whisper-large-v3, 33 hidden states of width 1280; ``humo_audio_features`` then
``whisper_windows_humo``): the encoder runs on *every* 3000-frame chunk, the stacked states of the chunks are
concatenated and cut to ``2 * audio_len`` steps, reduced to 5 groups per step (means of states 0-7, 8-15, 16-23,
24-31, and state 32 alone) and resampled 50 Hz -> 25 Hz by linear interpolation with ``align_corners=True`` to
``audio_len`` frames -> ``[audio_len, 5, 1280]``. Latent frame 0 gets 3 zero slots and video frames -2..2; latent
``i >= 1`` gets video frames ``4i - 5 ... 4i + 2`` (its 4 frames ``4i - 3 ... 4i`` and 2 either side); indices
outside ``[0, audio_len)`` are zero -> ``[1 + (num_frames - 1) // 4, 8, 5, 1280]`` (+ optional all-zero reference
slots).

The window functions are pure (numpy/jnp index arithmetic on the stacked states) so that they can be tested
without a model; ``audio_condition`` chains the whole front end with the Flax ``WhisperEncoder``.
"""

from __future__ import annotations

import functools
import os
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.models.audio.whisper import WhisperEncoder, WhisperEncoderConfig

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SAMPLES = 480_000  # 30 s: what one Whisper encoder pass sees
CHUNK_FRAMES = CHUNK_SAMPLES // HOP_LENGTH  # 3000 log-mel frames
SAMPLES_PER_VIDEO_FRAME = 640  # 16 kHz / 25 fps
ENCODER_STEPS_PER_VIDEO_FRAME = 2  # 50 Hz encoder states / 25 fps

CUSTOM_WINDOW = 10  # encoder steps per video frame window (HunyuanCustom / Avatar)
CUSTOM_LEFT_PAD = 4  # zero steps prepended before windowing
AVATAR_MAX_FRAMES = 400  # Avatar's cap on the number of audio frames (16 s)
HUMO_WINDOW = 8  # 25 Hz audio frames per latent-frame window
HUMO_GROUPS = 5

Task = Literal["custom", "avatar", "humo"]


# ----------------------------------------------------------------------------------------------------------------
# log-mel


def _hz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
    freq = np.asarray(freq, np.float64)
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(freq, 1e-300) / 1000.0) * (27.0 / np.log(6.4)), mels)


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, np.float64)
    freq = 200.0 * mels / 3.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels - 15.0)), freq)


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int = 80, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Whisper's mel filter bank ``[n_fft // 2 + 1, n_mels]`` (float64, read-only): Slaney mel scale, triangles
    in Hz between 0 and 8 kHz, Slaney area normalisation; the formula of ``transformers.audio_utils.mel_filter_bank``
    (``norm="slaney", mel_scale="slaney"``), i.e. ``librosa.filters.mel(..., htk=False, norm="slaney")``."""
    mel_points = np.linspace(_hz_to_mel_slaney(0.0), _hz_to_mel_slaney(8000.0), n_mels + 2)
    filter_freqs = _mel_to_hz_slaney(mel_points)
    fft_freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    diff = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    fb *= (2.0 / (filter_freqs[2:n_mels + 2] - filter_freqs[:n_mels]))[None, :]
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=1)
def _hann(n_fft: int) -> np.ndarray:
    return np.hanning(n_fft + 1)[:-1]  # periodic Hann, as torch.hann_window and transformers' window_function


def _log_mel_chunk(chunk: np.ndarray, n_mels: int) -> np.ndarray:
    """One 480,000-sample chunk (already zero-padded) -> ``[3000, n_mels]`` float64."""
    padded = np.pad(chunk.astype(np.float64), (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:CHUNK_FRAMES]
    spec = np.fft.rfft(frames * _hann(N_FFT), axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    logm = np.log10(np.maximum(power @ mel_filters(n_mels), 1e-10))
    logm = np.maximum(logm, logm.max() - 8.0)
    return (logm + 4.0) / 4.0


def log_mel(audio: np.ndarray, n_mels: int = 80, max_chunks: int | None = None) -> np.ndarray:
    """Whisper log-mel features of 16 kHz mono ``audio [N]``: ``[3000 * ceil(N / 480000), n_mels]`` float32,
    channels last (``input_features`` of ``WhisperFeatureExtractor(feature_size=n_mels)`` per 30 s chunk, chunks
    concatenated along time, transposed). Each chunk is padded to 30 s and normalised on its own (its max), as
    in the references. ``max_chunks`` computes only the first ones (HunyuanCustom encodes only the first)."""
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"log_mel expects mono samples [N]; got shape {x.shape} (average the channels first)")
    if x.shape[0] == 0:
        raise ValueError("log_mel got empty audio; the Whisper front end needs at least one sample")
    x = x.astype(np.float32)  # the extractor casts its input to float32 first
    chunks = -(-x.shape[0] // CHUNK_SAMPLES)
    if max_chunks is not None:
        chunks = min(chunks, max(1, int(max_chunks)))
    out = np.empty((chunks * CHUNK_FRAMES, n_mels), np.float32)
    for c in range(chunks):
        chunk = np.zeros(CHUNK_SAMPLES, np.float32)
        piece = x[c * CHUNK_SAMPLES:(c + 1) * CHUNK_SAMPLES]
        chunk[:piece.shape[0]] = piece
        out[c * CHUNK_FRAMES:(c + 1) * CHUNK_FRAMES] = _log_mel_chunk(chunk, n_mels)
    return out


# ----------------------------------------------------------------------------------------------------------------
# windows (pure functions of the stacked encoder states)


def stack_hidden_states(hidden_states) -> jax.Array:
    """``WhisperEncoder``'s ``hidden_states`` tuple (``n_states`` arrays ``[B, T, C]``) -> ``[B, T, n_states, C]``
    (``torch.stack(hidden_states, dim=2)`` of the references)."""
    return jnp.stack(hidden_states, axis=2)


def whisper_windows_custom(hidden_states, num_frames: int, *, num_audio_frames: int | None = None,
                           stride: int = 1, max_frames: int | None = None) -> jax.Array:
    """HunyuanCustom / HunyuanVideo-Avatar audio windows ``[num_frames, 10, n_states, C]`` from the stacked
    encoder states ``[T_enc, n_states, C]`` of one 30 s window (50 Hz; ``T_enc`` = 1500).

    With ``P`` = the states with 4 zero steps prepended, video frame ``f`` gets ``P[2*stride*f : 2*stride*f + 10]``
    (encoder steps ``2*stride*f - 4 ... 2*stride*f + 5``; ``stride`` 2 is the references' 12.5 fps mode). Rows
    past the end of the states are zero (the references never reach them: 400 frames need 808 of 1504 rows).
    Frames ``f >= min(num_audio_frames, max_frames)`` are all zero: the references build windows only for the
    ``audio_len`` frames the audio covers (Avatar: at most 400) and zero-pad the frame axis to the video length."""
    h = jnp.asarray(hidden_states)
    if h.ndim != 3:
        raise ValueError(f"expected stacked encoder states [T_enc, n_states, C]; got shape {h.shape}")
    if num_frames < 0 or stride < 1:
        raise ValueError(f"need num_frames >= 0 and stride >= 1; got {num_frames}, {stride}")
    valid_frames = num_frames if num_audio_frames is None else min(num_frames, int(num_audio_frames))
    if max_frames is not None:
        valid_frames = min(valid_frames, int(max_frames))
    t_enc = h.shape[0]
    if t_enc == 0:
        raise ValueError("no encoder states to window (T_enc = 0)")
    f = np.arange(num_frames)[:, None]
    rows = ENCODER_STEPS_PER_VIDEO_FRAME * stride * f + np.arange(CUSTOM_WINDOW)[None, :] - CUSTOM_LEFT_PAD
    keep = (rows >= 0) & (rows < t_enc) & (f < valid_frames)
    gathered = h[np.clip(rows, 0, t_enc - 1)]
    return jnp.where(jnp.asarray(keep)[:, :, None, None], gathered, jnp.zeros((), h.dtype))


def _interp_align_corners(x: jax.Array, out_len: int) -> jax.Array:
    """``torch.nn.functional.interpolate(mode="linear", align_corners=True)`` along axis 0 of ``x [T, ...]``."""
    t_in = x.shape[0]
    if out_len == 0:
        return jnp.zeros((0,) + x.shape[1:], x.dtype)
    if t_in == 0:
        raise ValueError("cannot interpolate from an empty sequence")
    scale = (t_in - 1) / (out_len - 1) if out_len > 1 else 0.0
    pos = np.arange(out_len) * scale
    lo = np.minimum(np.floor(pos).astype(np.int64), t_in - 1)
    hi = np.minimum(lo + 1, t_in - 1)
    w = (pos - lo).astype(np.float32).reshape((-1,) + (1,) * (x.ndim - 1))
    return (x[lo] * (1.0 - w) + x[hi] * w).astype(x.dtype)


def humo_audio_features(hidden_states, num_audio_frames: int) -> jax.Array:
    """HuMo's per-video-frame audio features ``[num_audio_frames, 5, C]`` from the stacked encoder states
    ``[T50, n_states, C]`` of all 30 s chunks, concatenated (50 Hz).

    The states are cut to ``2 * num_audio_frames`` steps; each step is reduced to 5 groups: the means of 4 equal
    consecutive groups of states ``0 ... n_states - 2`` and the last state alone (whisper-large-v3: states 0-7,
    8-15, 16-23, 24-31, 32, exactly the reference); each group is resampled 50 Hz -> 25 Hz by linear interpolation
    with ``align_corners=True`` to ``num_audio_frames`` frames (the endpoints are kept, so frame ``j`` samples step
    ``j * (T - 1) / (num_audio_frames - 1)``, not exactly ``2j``; as the reference)."""
    h = jnp.asarray(hidden_states)
    if h.ndim != 3:
        raise ValueError(f"expected stacked encoder states [T50, n_states, C]; got shape {h.shape}")
    n_states = h.shape[1]
    if n_states < 5 or (n_states - 1) % 4:
        raise ValueError(f"HuMo groups need 4k + 1 hidden states (whisper-large-v3: 33); got {n_states}")
    steps = 2 * int(num_audio_frames)
    if h.shape[0] < steps:
        raise ValueError(f"{num_audio_frames} audio frames need {steps} encoder steps; got {h.shape[0]}")
    h = h[:steps].astype(jnp.float32)
    g = (n_states - 1) // 4
    groups = [h[:, i * g:(i + 1) * g].mean(axis=1) for i in range(4)] + [h[:, n_states - 1]]
    return _interp_align_corners(jnp.stack(groups, axis=1), int(num_audio_frames))


def humo_window_indices(num_frames: int, frame0: int = 0) -> np.ndarray:
    """Audio-frame indices ``[1 + (num_frames - 1) // 4, 8]`` of HuMo's latent windows (-1 marks a zero slot
    that is not an audio frame: the 3 leading slots of latent 0). Latent 0: 3 zero slots, then frames
    ``frame0 - 2 ... frame0 + 2``; latent ``i >= 1``: frames ``frame0 + 4i - 5 ... frame0 + 4i + 2``. Any index
    outside the audio also reads as zero (``whisper_windows_humo``)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}")
    latents = 1 + (int(num_frames) - 1) // 4
    idx = np.empty((latents, HUMO_WINDOW), np.int64)
    idx[0] = [-1, -1, -1] + [frame0 + k for k in range(-2, 3)]
    for i in range(1, latents):
        start = frame0 + 1 + 4 * (i - 1) - 2
        idx[i] = np.arange(start, start + HUMO_WINDOW)
    return idx


def whisper_windows_humo(features, num_frames: int, *, frame0: int = 0, num_ref: int = 0) -> jax.Array:
    """HuMo audio windows ``[1 + (num_frames - 1) // 4 + num_ref, 8, 5, C]`` from the 25 Hz features
    ``[audio_len, 5, C]`` of ``humo_audio_features`` (see ``humo_window_indices``; ``frame0`` is the first video
    frame of the clip, ``audio_shift`` 2 as the reference). Slots outside ``[0, audio_len)`` and the 3 leading slots
    of latent 0 are zero; ``num_ref`` all-zero windows are appended for the reference-image latent slots."""
    feat = jnp.asarray(features)
    if feat.ndim != 3:
        raise ValueError(f"expected 25 Hz audio features [T, groups, C]; got shape {feat.shape}")
    idx = humo_window_indices(num_frames, frame0)
    t = feat.shape[0]
    keep = (idx >= 0) & (idx < t)
    keep[0, :3] = False
    gathered = feat[np.clip(idx, 0, max(t - 1, 0))] if t else jnp.zeros(idx.shape + feat.shape[1:], feat.dtype)
    out = jnp.where(jnp.asarray(keep)[:, :, None, None], gathered, jnp.zeros((), feat.dtype))
    if num_ref:
        out = jnp.concatenate([out, jnp.zeros((int(num_ref),) + out.shape[1:], out.dtype)], axis=0)
    return out


# ----------------------------------------------------------------------------------------------------------------
# the whole front end


@functools.lru_cache(maxsize=4)
def _encoder_fn(cfg: WhisperEncoderConfig):
    model = WhisperEncoder(cfg)
    return jax.jit(lambda params, feats: jnp.stack(model.apply({"params": params}, feats)["hidden_states"], axis=2))


def encoder_states(mel: np.ndarray, encoder_cfg: WhisperEncoderConfig, encoder_params) -> jax.Array:
    """Stacked hidden states ``[chunks * max_source_positions, n_states, C]`` of the log-mel ``[chunks * 3000,
    n_mels]``: every 3000-frame chunk encoded on its own (a batch), the chunks concatenated in time."""
    cfg = encoder_cfg
    mel = np.asarray(mel, np.float32)
    if mel.ndim != 2 or mel.shape[1] != cfg.num_mel_bins or mel.shape[0] % cfg.num_frames:
        raise ValueError(f"expected log-mel [k * {cfg.num_frames}, {cfg.num_mel_bins}]; got {mel.shape}")
    batch = mel.reshape(-1, cfg.num_frames, cfg.num_mel_bins)
    states = _encoder_fn(cfg)(encoder_params, jnp.asarray(batch))  # [chunks, T, n_states, C]
    return states.reshape((-1,) + states.shape[2:])


def audio_condition(audio, num_frames: int, encoder_cfg: WhisperEncoderConfig, encoder_params,
                    task: Task = "custom", *, num_ref: int = 0) -> jax.Array:
    """The audio condition of one clip: 16 kHz mono samples (or a path, read with ``hcjax.io.audio.load_audio``)
    -> ``log_mel`` -> Flax Whisper encoder (``encoder_params``: unboxed params of ``WhisperEncoder(encoder_cfg)``)
    -> windows for ``num_frames`` video frames.

    * ``task="custom"`` (HunyuanCustom audio model, whisper-tiny): first 30 s only; ``[num_frames, 10, 5, 384]``,
      frames past ``len(audio) // 640`` zero. Add the batch axis for the DiT (``[1, F, 10, 5, 384]``).
    * ``task="avatar"`` (HunyuanVideo-Avatar, whisper-tiny): as ``custom``, plus the reference's cap of 400 audio
      frames and its float16 rounding of the log-mel (its data loader stores the features as float16 before the
      fp32 encoder). The padding to 129 frames / +5 frames is the caller's, through ``num_frames``.
    * ``task="humo"`` (HuMo, whisper-large-v3): every 30 s chunk; ``[1 + (num_frames - 1) // 4 + num_ref, 8, 5,
      1280]``.
    """
    if isinstance(audio, (str, os.PathLike)):
        from hcjax.io.audio import load_audio

        audio = load_audio(audio, SAMPLE_RATE)
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono 16 kHz samples [N]; got shape {audio.shape}")
    audio_len = audio.shape[0] // SAMPLES_PER_VIDEO_FRAME
    if task in ("custom", "avatar"):
        mel = log_mel(audio, encoder_cfg.num_mel_bins, max_chunks=1)
        if task == "avatar":
            mel = mel.astype(np.float16).astype(np.float32)
        states = encoder_states(mel, encoder_cfg, encoder_params)
        return whisper_windows_custom(states, num_frames, num_audio_frames=audio_len,
                                      max_frames=AVATAR_MAX_FRAMES if task == "avatar" else None)
    if task == "humo":
        mel = log_mel(audio, encoder_cfg.num_mel_bins)
        states = encoder_states(mel, encoder_cfg, encoder_params)
        feats = humo_audio_features(states, audio_len)
        return whisper_windows_humo(feats, num_frames, num_ref=num_ref)
    raise ValueError(f"task must be 'custom', 'avatar' or 'humo'; got {task!r}")


__all__ = [
    "CHUNK_FRAMES", "CHUNK_SAMPLES", "HOP_LENGTH", "N_FFT", "SAMPLES_PER_VIDEO_FRAME", "SAMPLE_RATE",
    "audio_condition", "encoder_states", "humo_audio_features", "humo_window_indices", "log_mel", "mel_filters",
    "stack_hidden_states", "whisper_windows_custom", "whisper_windows_humo",
]
