#!/usr/bin/env python3
"""bench/loadtest.md from the koinos-loadtest JSON reports of one `bench/loadtest` run.

    loadtest_report.py --runs DIR --results bench/results.md --command C --commit C > bench/loadtest.md
    loadtest_report.py --check-scale RUN.json     exit 0 if that scale step held, 1 if not

A scale step holds when fewer than 1 % of its participants failed, every camera received ended
at the ladder's 360 lines (six-person calls), and loss stayed under 5 %.
"""

import argparse
import json
import os
import re
import statistics
import sys
from datetime import datetime, timezone

# The gateway's defaults (gateway/src/fallback.rs), used by the dev stack.
ENTER_AFTER_S = 10
RESTORE_AFTER_S = 20
LADDER = {2: 720, 3: 540, 4: 540, 5: 360, 6: 360}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def scale_holds(report):
    if report is None:
        return False, "no report (the run itself failed)"
    s = report["summary"]
    why = []
    if s["participants"] == 0 or s["failed"] / s["participants"] >= 0.01:
        why.append(f"{s['failed']} of {s['participants']} joins failed")
    heights = {int(h): n for h, n in s["final_heights"].items()}
    if set(heights) != {360}:
        missed, overshot = above_cap(report)
        why.append(f"cameras ended at {heights} lines, not all at 360: {missed} above the cap from the start "
                   f"(a ladder miss), {overshot} after holding it for {HELD_MS / 1000:.1f} s or more "
                   "(LiveKit's simulcast overshoot)")
    if s["loss_percent"] >= 5:
        why.append(f"loss {s['loss_percent']:.1f} %")
    return (False, "; ".join(why)) if why else (True, "held")


# A subscription that sat at or under the cap this long before going above it had its cap in force:
# LiveKit then served a higher layer because it judged the capped ones stopped (its forwarder
# "overshoots" for simulcast rather than pause), which a starved SFU or publisher brings about.
HELD_MS = 1500


def above_cap(report, cap=360):
    """(subscriptions above the cap from the start, subscriptions that went above it after holding
    it), counting each remote camera as it stood when the run told everyone to leave."""
    missed = overshot = 0
    for p in report.get("participants", []):
        leave = p.get("leave_ms")
        for t in p["remote"].values():
            res = [r for r in t.get("resolutions", []) if t["kind"] == "video" and (leave is None or r[0] <= leave)]
            if not res or res[-1][2] <= cap:
                continue
            held = any(a[2] <= cap and b[0] - a[0] >= HELD_MS for a, b in zip(res, res[1:]))
            if held:
                overshot += 1
            else:
                missed += 1
    return missed, overshot


def join_times(report):
    """Per participant: signalling connect -> first remote camera key frame, ms."""
    out = []
    for p in (report or {}).get("participants", []):
        frames = [t["first_frame_ms"] for t in p["remote"].values() if t["kind"] == "video" and t["first_frame_ms"] is not None]
        if frames and p.get("token_ms") is not None:
            out.append(min(frames) - p["token_ms"])
    return out


def pct(values, q):
    values = sorted(values)
    return values[round((len(values) - 1) * q)]


def fmt_ms(v):
    return "—" if v is None else f"{v:,.0f}"


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, shared and noisy"


def token_section(results_path):
    try:
        text = open(results_path).read()
    except OSError:
        return None
    sections = re.split(r"(?m)^## ", text)
    for section in reversed(sections):
        if "(b) control `POST /api/rtc/token`" in section:
            return "## " + section.strip()
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs")
    ap.add_argument("--results")
    ap.add_argument("--command", default="bench/loadtest")
    ap.add_argument("--commit", default="?")
    ap.add_argument("--check-scale")
    a = ap.parse_args()

    if a.check_scale:
        ok, why = scale_holds(load(a.check_scale))
        print(f"scale step: {why}", file=sys.stderr)
        sys.exit(0 if ok else 1)

    runs = a.runs
    get = lambda name: load(os.path.join(runs, f"{name}.json"))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = []
    w = out.append
    w("# Benchmark report: simulated participants with real WebRTC")
    w("")
    w(f"Generated {now} by `{a.command}` at commit `{a.commit}`, on {machine()}.")
    w("Participants are `koinos-loadtest` processes' peer connections (the `webrtc` crate: Opus audio,")
    w("three VP8 simulcast layers at 360/540/720), on the same machine as Synapse, control, LiveKit and a")
    w("release-build gateway on :7890; \"direct\" runs connect to LiveKit itself. Gateway and direct runs")
    w("alternate in the same run. Every figure comes from the JSON reports of that run; a number that")
    w("misses its target says so.")
    w("")

    # 1. Join time.
    w("## 1. Join time: signalling connect → first remote camera frame")
    w("")
    w("| participants | path | runs | samples | p50 (ms) | p95 (ms) |")
    w("|---:|---|---:|---:|---:|---:|")
    ratios = []
    for n in (2, 6):
        row = {}
        for path in ("gateway", "direct"):
            values, runs_ok = [], 0
            for rnd in (1, 2):
                r = get(f"join-{n}-{path}-{rnd}")
                if r is not None:
                    runs_ok += 1
                    values += join_times(r)
            if values:
                row[path] = (pct(values, 0.5), pct(values, 0.95))
                w(f"| {n} | {path} | {runs_ok} | {len(values)} | {fmt_ms(row[path][0])} | {fmt_ms(row[path][1])} |")
            else:
                w(f"| {n} | {path} | {runs_ok} | 0 | — | — |")
        if "gateway" in row and "direct" in row and row["direct"][0] and row["direct"][1]:
            ratios.append((n, row["gateway"][0] / row["direct"][0], row["gateway"][1] / row["direct"][1]))
    w("")
    for n, r50, r95 in ratios:
        w(f"- {n} participants: gateway / direct **{r50:.2f}×** at p50, **{r95:.2f}×** at p95.")
    w("- Most of a join is LiveKit's and the peer connections' (ICE, DTLS, the first key frame); the")
    w("  gateway adds one WebSocket hop and its token checks (`bench/join` times that part alone).")
    w("- The simulated cameras play a clip encoded in advance with a key frame every second, so they")
    w("  cannot answer LiveKit's picture request at once as a browser does: the absolute times carry up")
    w("  to a second of waiting for the next key frame, on both paths alike. Read the ratio.")
    w("")

    # 2 and 6. Scale.
    w("## 2. CPU per participant, gateway vs LiveKit, six-person calls")
    w("")
    w("CPU time of each process over the run divided by the run's wall time and by the participants")
    w("(`/proc`, 10 ms ticks). \"LiveKit direct\" is LiveKit in the direct run with the same number of rooms.")
    w("")
    w("| rooms | participants | held | gateway (ms CPU/s per participant) | LiveKit via gateway | ratio gateway/LiveKit | LiveKit direct | load tester (cores) |")
    w("|---:|---:|---|---:|---:|---:|---:|---:|")
    largest, stop_reason, last_cpu = 0, None, None
    rooms = 1
    while True:
        g = get(f"scale-{rooms}-gateway")
        d = get(f"scale-{rooms}-direct")
        if g is None and d is None:
            break
        ok, why = scale_holds(g)
        parts = rooms * 6
        def per(report, name):
            c = (report or {}).get("cpu", {}).get(name)
            return None if c is None else c["cores"] * 1000 / parts
        gw, lk, lkd = per(g, "gateway"), per(g, "livekit"), per(d, "livekit")
        tester = (g or {}).get("cpu", {}).get("loadtest", {}).get("cores")
        ratio = f"{gw / lk:.4f}" if gw is not None and lk else "—"
        f = lambda v: "—" if v is None else f"{v:.2f}"
        w(f"| {rooms} | {parts} | {'yes' if ok else 'no: ' + why} | {f(gw)} | {f(lk)} | {ratio} | {f(lkd)} | {f(tester)} |")
        if ok and largest == rooms - 1:
            largest = rooms
            last_cpu = g.get("cpu", {}) if g else None
        elif not ok and stop_reason is None:
            stop_reason = (rooms, why, g.get("cpu", {}) if g else {})
        rooms += 1
    w("")
    tail = []
    w_main, w = w, tail.append
    w("## 6. The largest number of simultaneous six-person calls this machine sustains")
    w("")
    if largest:
        w(f"- **{largest} call(s) of six** ({largest * 6} participants) with < 1 % failed joins, every camera at 360 lines and loss < 5 %.")
    else:
        w("- Not even one six-person call held here: see the table above.")
    if stop_reason:
        rooms_bad, why, cpu = stop_reason
        bad, before = get(f"scale-{rooms_bad}-gateway"), get(f"scale-{rooms_bad - 1}-gateway")
        missed, overshot = above_cap(bad) if bad else (0, 0)
        if missed:
            w(f"- **Misses the design** at {rooms_bad} calls: {missed} subscription(s) in six-person calls received more")
            w("  than 360 lines through the gateway from the start, before the cap ever held: a ladder defect.")
        w(f"- At {rooms_bad} calls it did not hold: {why}.")
        busy = {k: v["cores"] for k, v in cpu.items()}
        total = sum(busy.values())
        cores = os.cpu_count() or 1
        signs = []
        if bad and before:
            lb, la = before["summary"]["loss_percent"], bad["summary"]["loss_percent"]
            if la >= 5 > lb:
                signs.append(f"packet loss went from {lb:.2f} % at {rooms_bad - 1} calls to {la:.1f} % at {rooms_bad}")
        if overshot:
            subs = sum(int(n) for n in bad["summary"]["final_heights"].values())
            signs.append(f"LiveKit, short of the capped 360 layers, served {overshot} of {subs} camera subscriptions a"
                         " higher simulcast layer (its forwarder overshoots for simulcast instead of pausing; LiveKit"
                         " 1.13 has no setting for it)")
        w(f"- The processes measured used {total:.2f} of {cores} cores "
          f"({', '.join(f'{k} {v:.2f}' for k, v in sorted(busy.items()))}); Synapse, coturn and the kernel's "
          "packet handling come on top of that sum.")
        if signs:
            gw = busy.get("gateway")
            w("- **What saturates first: the machine's CPU, shared by LiveKit and the load tester.** "
              + "; ".join(signs)[:1].upper() + "; ".join(signs)[1:] + "." + (f" The gateway stayed at {gw:.2f} cores: the limit is the machine's,"
                                          " not the gateway's." if gw is not None else ""))
    else:
        w("- Every count tried held; raise `--max-rooms` to find the limit.")
    w("")
    w = w_main

    # 3. Ladder.
    w("## 3. Ladder convergence")
    w("")
    lad = get("ladder")
    if lad is None:
        w("- The ladder run failed: no figures.")
    else:
        w("Six participants joining 4 s apart through the gateway: from the media connection of the")
        w("participant that lowers the cap until every earlier participant receives every earlier camera")
        w("at or under it (key-frame sizes).")
        w("")
        w("| call size | cap | converged after (ms) |")
        w("|---:|---:|---:|")
        for step in lad["summary"]["ladder"]:
            w(f"| {step['participants']} | {step['cap']} | {fmt_ms(step['converged_ms'])} |")
        heights = {int(h): n for h, n in lad["summary"]["final_heights"].items()}
        w("")
        if set(heights) == {360}:
            w(f"- At six, all {sum(heights.values())} received cameras ended at 360 lines, as the design requires.")
        else:
            w(f"- **Misses the design**: at six, cameras ended at {heights} lines (the design caps them at 360).")
        if any(s["converged_ms"] is None for s in lad["summary"]["ladder"]):
            w("- **A step did not converge within the run.**")
    w("")

    # 4. Fallback.
    w("## 4. Audio-only fallback")
    w("")
    fb = get("fallback")
    runs_fb = (fb or {}).get("summary", {}).get("fallback", [])
    if not runs_fb:
        w("- The fallback run failed or injected no loss: no figures.")
    else:
        f0 = runs_fb[0]
        sec = lambda ms: "never" if ms is None else f"{ms / 1000:.1f} s"
        w(f"One of two participants loses {f0['loss_percent']:.0f} % of the RTP it receives for 40 s (an interceptor at the")
        w("wire end of its subscriber connection, so its receiver reports tell LiveKit).")
        w("")
        w("| loss start → its incoming video paused | loss end → video back | fallbacks entered |")
        w("|---:|---:|---:|")
        w(f"| {sec(f0['paused_after_ms'])} | {sec(f0['restored_after_ms'])} | {f0['entered']} |")
        w("")
        w(f"- The gateway pauses after its link score has been bad for {ENTER_AFTER_S} s and restores after {RESTORE_AFTER_S} s of")
        w("  good; the time before that is LiveKit's own scoring (a few seconds of receiver reports).")
        if f0["entered"] != 1:
            w(f"- **Flapping**: {f0['entered']} fallbacks for one bad spell (target: one).")
        else:
            w("- No flapping: one fallback for the one bad spell.")
        if f0["paused_after_ms"] is None or f0["restored_after_ms"] is None:
            w("- **Misses the target**: the fallback did not both happen and end within the run.")
    w("")

    # 7. The hostile participant.
    w("## 7. A hostile participant: does the server's policy hold?")
    w("")
    w("One participant of a six-person call (and the lossy one of the fallback run) speaks LiveKit's")
    w("protocol as a misbehaving client would (`koinos-loadtest --hostile`): LiveKit's JSON encoding,")
    w("settings asking for 1080 lines, `simulate` (a server shutdown), unmuting the camera the fallback")
    w("paused, and every token it was handed presented to LiveKit directly.")
    w("")
    verdicts = []
    for name in ("hostile", "fallback"):
        report = get(name)
        for run in (report or {}).get("summary", {}).get("hostile", []):
            verdicts.extend((name, v) for v in run["verdicts"] if v["held"] is not None)
    if not verdicts:
        w("- The hostile runs failed or tried nothing: no verdict.")
    else:
        w("| run | behaviour | held | what happened |")
        w("|---|---|---|---|")
        for name, v in verdicts:
            w(f"| {name} | {v['behaviour']} | {'yes' if v['held'] else '**no**'} | {v['detail']} |")
        broken = [v for _, v in verdicts if not v["held"]]
        w("")
        w("- **The policy was broken**: see the rows marked no." if broken else "- The policy held against every behaviour tried.")
    w("")

    # 5. Token issuance.
    w("## 5. Token issuance")
    w("")
    section = token_section(a.results) if a.results else None
    if section:
        w("From control's own benchmark (`bench/run`), its latest run in `bench/results.md`:")
        w("")
        for line in section.splitlines():
            w(("#" + line) if line.startswith("## ") else line)
    else:
        w("- No token benchmark in `bench/results.md`: run `bench/run`.")
    w("")
    out.extend(tail)
    print("\n".join(out))


if __name__ == "__main__":
    main()
