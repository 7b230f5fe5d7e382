import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import type { Page } from "@playwright/test";
import { inboundCounters, joinDemoCall, pointLiveKitUrlAt, test } from "../e2e/fixtures";

/**
 * CPU the gateway spends per call participant, next to what LiveKit spends on the same
 * participants, in one run: for each call size, everyone joins through the gateway, media
 * flows for a settling period, and both processes' CPU time (/proc/PID/stat utime+stime) is
 * read over a measured window. An idle window first gives each process's floor.
 *
 * Knobs (environment): KOINOS_BENCH_SIZES (default "2,4,6"), KOINOS_BENCH_WINDOW_S (60),
 * KOINOS_BENCH_SETTLE_S (20), KOINOS_BENCH_OUT (JSON report path; printed otherwise).
 */
/** The gateway measured: bench/cpu starts a release build on :7890 and points the pages at it. */
const GATEWAY_PORT = Number(process.env.KOINOS_BENCH_GATEWAY_PORT ?? 7880);
const LIVEKIT_PORT = Number(process.env.KOINOS_LIVEKIT_PORT ?? 7881);
const SIZES = (process.env.KOINOS_BENCH_SIZES ?? "2,4,6").split(",").map(Number);
const WINDOW_S = Number(process.env.KOINOS_BENCH_WINDOW_S ?? 60);
const SETTLE_S = Number(process.env.KOINOS_BENCH_SETTLE_S ?? 20);
const USERS = ["alice", "bob", "carol", "dave", "erin", "frank"];
const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());

/** The pid listening on a TCP port, from `ss`. */
function listener(port: number): number {
  const out = execFileSync("ss", ["-ltnpH", `sport = :${port}`]).toString();
  const pid = /pid=(\d+)/.exec(out)?.[1];
  if (!pid) throw new Error(`nothing listens on ${port} (is the dev stack running, as root?)`);
  return Number(pid);
}

/** CPU seconds a process has used so far (user + system). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

interface Window {
  participants: number;
  seconds: number;
  gatewayCpuMsPerS: number;
  livekitCpuMsPerS: number;
  /** Inbound video frames decoded per second, summed over the browsers: media really flowed. */
  framesPerS: number;
}

async function measure(participants: number, pages: Page[], pids: { gateway: number; livekit: number }): Promise<Window> {
  const frames = async (): Promise<number> => {
    let sum = 0;
    for (const page of pages) sum += (await inboundCounters(page)).framesDecoded;
    return sum;
  };
  const before = { gateway: cpuSeconds(pids.gateway), livekit: cpuSeconds(pids.livekit), frames: await frames(), at: Date.now() };
  await new Promise((r) => setTimeout(r, WINDOW_S * 1000));
  const seconds = (Date.now() - before.at) / 1000;
  return {
    participants,
    seconds,
    gatewayCpuMsPerS: ((cpuSeconds(pids.gateway) - before.gateway) * 1000) / seconds,
    livekitCpuMsPerS: ((cpuSeconds(pids.livekit) - before.livekit) * 1000) / seconds,
    framesPerS: ((await frames()) - before.frames) / seconds,
  };
}

test("gateway and LiveKit CPU per participant", async ({ openUserPage }) => {
  const pids = { gateway: listener(GATEWAY_PORT), livekit: listener(LIVEKIT_PORT) };
  const windows: Window[] = [await measure(0, [], pids)];
  const pages: Page[] = [];
  for (const size of SIZES) {
    while (pages.length < size) {
      const user = USERS[pages.length] as string;
      const page = await openUserPage(user);
      // The LiveKit URL control hands out is the dev stack's gateway; this one is measured.
      await pointLiveKitUrlAt(page, GATEWAY_PORT);
      await joinDemoCall(page, user);
      pages.push(page);
    }
    await new Promise((r) => setTimeout(r, SETTLE_S * 1000));
    windows.push(await measure(size, pages, pids));
  }
  const report = JSON.stringify({ pids, clockTicks: CLOCK_TICKS, windowSeconds: WINDOW_S, settleSeconds: SETTLE_S, windows }, null, 2);
  if (process.env.KOINOS_BENCH_OUT) writeFileSync(process.env.KOINOS_BENCH_OUT, report);
  else console.log(report);
});
