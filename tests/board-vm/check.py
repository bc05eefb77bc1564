#!/usr/bin/env python3
"""Judges what tests/board-vm/guest.sh brought back and prints one summary line.

Usage: check.py OUT_DIR TOTAL_SECONDS VM_SECONDS. Exit 0 when every check passed.

The recordings are analysed here, on the host, rather than in the slow emulated guest:
  call1-seen.y4m      the kiosk's camera (vivid) as the agent decoded it
  call1-heard.wav     the kiosk's microphone (440 Hz into the loopback) as the agent played it
  kiosk-played.raw    what the kiosk played into the loopback during call 1 (the agent's 660 Hz)
  call2-heard.wav     call 2, in which the camera was unplugged: the sound after the unplug
"""

import json
import re
import math
from collections import Counter
import struct
import sys
import wave
from pathlib import Path

RATE = 48_000
TONE_TO_AGENT = 440.0
TONE_TO_KIOSK = 660.0
TOLERANCE_HZ = 5.0
# Seconds of the recording the tone must fill at least (the rest: silence before and after
# the call, and sound damaged on a busy machine).
MIN_TONE_S = 1.0
MIN_FRAMES = 20


def samples_from_bytes(data):
    data = data[: len(data) // 2 * 2]
    return struct.unpack(f"<{len(data) // 2}h", data)


def wav_samples(path):
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2), path
        return samples_from_bytes(w.readframes(w.getnframes()))


def tone(samples):
    """(frequency in Hz, RMS, share of the time) of the dominant tone: the most common period
    between rising zero crossings (interpolated, in bins 0.5 % wide), averaged over the periods
    within 1 % of it; the share is how much of the signal those periods cover. Robust against
    the blips, gaps and concealed frames of a call on a busy machine."""
    if not samples:
        return 0.0, 0.0, 0.0
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    crossings = []
    for i in range(1, len(samples)):
        a, b = samples[i - 1], samples[i]
        if a < 0 <= b:
            crossings.append(i - 1 + (-a) / (b - a))
    periods = [b - a for a, b in zip(crossings, crossings[1:]) if b - a > 2]
    if rms < 100 or len(periods) < 10:
        return 0.0, rms, 0.0
    bins = Counter(round(math.log(p) / 0.005) for p in periods)
    mode = math.exp(max(bins, key=bins.get) * 0.005)
    near = [p for p in periods if abs(p / mode - 1) <= 0.01]
    return RATE * len(near) / sum(near), rms, sum(near) / len(samples)


def y4m_frames(path):
    """The header's size and the luma planes of the complete frames."""
    data = path.read_bytes()
    header_end = data.index(b"\n")
    params = dict((p[0], p[1:]) for p in data[:header_end].decode().split()[1:])
    w, h = int(params["W"]), int(params["H"])
    frame = w * h * 3 // 2
    frames, at = [], header_end + 1
    while True:
        nl = data.find(b"\n", at)
        if nl < 0 or not data[at:nl].startswith(b"FRAME") or nl + 1 + frame > len(data):
            break
        frames.append(data[nl + 1 : nl + 1 + w * h])
        at = nl + 1 + frame
    return w, h, frames


def colour_bars(luma, w, h):
    """The luma levels of the vertical bands across the row at 3/4 height, as runs of similar
    level at least w/16 wide. vivid's 75 % colour bars (white, yellow, cyan, green, magenta,
    red, blue, black) get darker from left to right; scrolling rotates them."""
    row = luma[(h * 3 // 4) * w : (h * 3 // 4 + 1) * w]
    runs, start = [], 0
    for x in range(1, w + 1):
        if x == w or abs(row[x] - row[start]) > 8:
            if x - start >= w // 16:
                runs.append(sorted(row[start:x])[(x - start) // 2])
            start = x
    return runs


def is_colour_bars(levels):
    """True when the band levels are a rotation of 7 or 8 strictly darker steps."""
    if len(levels) > 1 and abs(levels[0] - levels[-1]) <= 8:
        levels = levels[1:]  # a band cut in two by the picture's edge
    for r in range(len(levels)):
        rotated = levels[r:] + levels[:r]
        if len(rotated) >= 7 and all(a > b + 5 for a, b in zip(rotated, rotated[1:])):
            return True
    return False


def main():
    out, total_s, vm_s = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    res = {}
    for line in (out / "results.env").read_text().splitlines() if (out / "results.env").exists() else []:
        k, _, v = line.partition("=")
        res[k] = v
    problems, notes = [], {}

    def need(cond, what):
        if not cond:
            problems.append(what)
        return cond

    if "failure" in res:
        problems.append(f"guest: {res['failure'].strip(chr(34))}")
    rc = (out / "guest.rc").read_text().strip() if (out / "guest.rc").exists() else "none"
    need(rc == "0" or "failure" in res, f"guest script exited {rc}")

    # kioskd doctor: camera, sound devices, GPIO lines.
    doctor = (out / "doctor.txt").read_text() if (out / "doctor.txt").exists() else ""
    if doctor:
        need(res.get("doctor_rc") == "0", "doctor exited non-zero")
        need("/dev/video0" in doctor and "vivid" in doctor and "YUYV" in doctor, "doctor did not list vivid")
        need("Loopback" in doctor, "doctor did not list the Loopback sound card")
        chip = res.get("gpio_chip", "gpiochip")
        need(f"/dev/{chip}" in doctor and "CALL" in doctor and "HANGUP" in doctor, "doctor did not list the GPIO lines")
        need("ok    buttons" in doctor and "ok    media devices" in doctor, "doctor did not open the devices")

    # Call 1: video from vivid at the agent (a change of size mid-call starts a numbered file).
    frames = 0
    seen = sorted(out.glob("call1-seen*.y4m"), key=lambda p: (len(p.name), p.name))
    last = None
    for y4m in seen:
        w, h, luma = y4m_frames(y4m)
        frames += len(luma)
        if luma:
            last = (w, h, luma[-1])
    if seen:
        w, h, _ = y4m_frames(seen[0])
        need(f"{w}x{h}" == res.get("video"), f"agent's video is {w}x{h}, not {res.get('video')}")
        if need(frames >= MIN_FRAMES and last is not None, f"agent decoded {frames} frames (< {MIN_FRAMES})"):
            bars = colour_bars(last[2], last[0], last[1])
            notes["bars"] = bars
            need(is_colour_bars(bars), f"not vivid's colour bars: luma {bars}")
        if len(seen) > 1:
            notes["video_files"] = len(seen)
    elif "failure" not in res:
        problems.append("no video recorded at the agent")

    # Call 1: the tone from the kiosk's microphone at the agent, and the kiosk's playback.
    f_agent = f_kiosk = 0.0

    def check_tone(what, samples, want):
        f, rms, share = tone(samples)
        notes[what] = f"{f:.1f} Hz over {share:.0%} of {len(samples) / RATE:.1f} s"
        need(abs(f - want) <= TOLERANCE_HZ and share * len(samples) >= MIN_TONE_S * RATE,
             f"{what}: {f:.1f} Hz (rms {rms:.0f}) over {share:.0%} of {len(samples) / RATE:.1f} s, not {want:.0f} Hz")
        return f

    if (out / "call1-heard.wav").exists():
        f_agent = check_tone("agent heard", wav_samples(out / "call1-heard.wav"), TONE_TO_AGENT)
    if (out / "kiosk-played.raw").exists():
        f_kiosk = check_tone("kiosk played", samples_from_bytes((out / "kiosk-played.raw").read_bytes()), TONE_TO_KIOSK)

    # Buttons: one press per press despite the bounce.
    if "presses_call" in res:
        need(res["presses_call"] == "2" and res["presses_hangup"] == "2",
             f"presses counted: CALL {res['presses_call']}, HANGUP {res['presses_hangup']} (2 each pressed)")
    if "led_idle" in res:
        need(res["led_idle"] == "10" and res.get("led_call") == "01",
             f"LEDs (CALL, BUSY): idle {res['led_idle']}, in call {res.get('led_call')}")
    if "health_idle_rc" in res:
        need(res["health_idle_rc"] == "0", "kioskd health failed on the idle kiosk")

    # Call 2: sound after the camera was unplugged, and the daemon telling.
    f_after = 0.0
    if (out / "call2-heard.wav").exists() and "after_unplug_wav_bytes" in res:
        data = (out / "call2-heard.wav").read_bytes()
        a, b = int(res["unplug_wav_bytes"]), int(res["after_unplug_wav_bytes"])
        after = samples_from_bytes(data[a + (a % 2) : b])
        need(len(after) >= 2 * RATE, f"only {len(after) / RATE:.1f} s of sound after the unplug")
        f_after = check_tone("after the unplug the agent heard", after, TONE_TO_AGENT)
        grown = int(res["after_unplug_y4m_bytes"]) - int(res["unplug_y4m_bytes"])
        notes["bytes_after_unplug"] = grown
        health = json.loads((out / "health-unplugged.json").read_text())
        need(health.get("state") == "connected", f"state after the unplug: {health.get('state')}")
        # The daemon's log reports the lost camera (guest.sh waits for that line), and so do
        # its health file and `kioskd health` (non-zero while a device does not work).
        lost = [p for p in health.get("problems", []) if p.startswith("camera")]
        need(bool(lost), f"the health file does not name the lost camera: {health.get('problems')}")
        need(res.get("health_unplugged_rc") not in (None, "0"), "kioskd health said healthy without a camera")
    # The microphone's processing (echo cancellation and the rest) ran on the real ALSA
    # devices. Under emulation (TCG) it may take longer than real time: the kiosk then gives it
    # up for the call, says why in its log and health file, and the sound goes on unprocessed.
    kiosk_log = (out / "kiosk.log").read_text(errors="replace") if (out / "kiosk.log").exists() else ""
    processing = "not run"
    if kiosk_log:
        need("microphone processing on" in kiosk_log, "the kiosk did not process its microphone")
        slow = re.search(r"too slow on this machine: ([0-9.]+) ms per 20 ms frame", kiosk_log)
        stopped = "audio processing stopped" in kiosk_log
        need(not stopped or slow is not None, "the kiosk's audio processing failed")
        processing = f"given up as too slow under emulation ({slow.group(1)} ms per 20 ms frame)" if slow else "on throughout"
        notes["processing"] = processing
    if "kiosk_exit" in res:
        need(res["kiosk_exit"] == "0", f"kioskd run exited {res['kiosk_exit']} on SIGTERM")

    if problems:
        print(f"board-vm: FAIL ({'; '.join(problems)}) in {total_s} s")
        return 1
    print(
        f"board-vm: PASS (camera vivid YUYV {res.get('video')}: {frames} frames decoded at the agent; "
        f"tone {TONE_TO_AGENT:.0f} Hz at the agent {f_agent - TONE_TO_AGENT:+.1f} Hz; "
        f"kiosk playback {f_kiosk:.1f} Hz; microphone processing {processing}; hangup via gpio-sim; "
        f"camera unplug → audio-only ({f_after:.1f} Hz), reported in the log and by kioskd health) in {total_s} s (guest {vm_s} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
