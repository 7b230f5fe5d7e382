import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "@playwright/test";
import { DEV_DIR } from "./env";

/** The dev stack's processes: metrics, supervisorctl, LiveKit's RoomService, a balancer and gateways of the test's own. */

/** A gateway metric summed over all its label sets (0 when absent), from the instance on `port`. */
export async function gatewayMetric(name: string, port = Number(process.env.KOINOS_GATEWAY_PORT ?? 7880)): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const [key, value] = line.split(" ");
    if (key === name || key?.startsWith(`${name}{`)) sum += Number(value ?? 0);
  }
  return sum;
}

/**
 * A TCP load balancer for a test, in front of gateway instances: new connections go to the
 * instance chosen now (`target`), or, when nothing accepts there (a killed instance), to the
 * `fallback` as a load balancer's passive health check would; `cut` drops the live ones, and
 * while `refusing` new ones are accepted and dropped at once, as when the network between
 * browser and server is down.
 */
export class Balancer {
  private readonly server: net.Server;
  private readonly live = new Set<net.Socket>();
  refusing = false;
  /** Connections that found `target` dead and went to `fallback`. */
  failedOver = 0;
  constructor(
    public target: number,
    public fallback?: number,
  ) {
    this.server = net.createServer((client) => {
      if (this.refusing) {
        client.destroy();
        return;
      }
      this.live.add(client);
      client.on("close", () => this.live.delete(client));
      client.on("error", () => undefined);
      const ports = this.fallback === undefined ? [this.target] : [this.target, this.fallback];
      this.pass(client, ports);
    });
  }

  private pass(client: net.Socket, ports: number[]): void {
    const [port, ...rest] = ports;
    if (port === undefined) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, "127.0.0.1");
    let connected = false;
    upstream.on("error", () => {
      if (!connected && rest.length > 0) {
        this.failedOver++;
        this.pass(client, rest);
      } else client.destroy();
    });
    upstream.once("connect", () => {
      connected = true;
      this.live.add(upstream);
      upstream.on("close", () => this.live.delete(upstream));
      client.pipe(upstream).pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return (this.server.address() as net.AddressInfo).port;
  }

  /** The instance behind it goes away for its connections (as when a pod is drained). */
  cut(): void {
    for (const socket of this.live) socket.destroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The LiveKit room a ticket (or LiveKit token) names: its `video.room` claim. */
export function livekitRoomOf(jwt: string): string {
  const payload = JSON.parse(Buffer.from(jwt.split(".")[1] ?? "", "base64url").toString("utf8")) as { video?: { room?: string } };
  if (!payload.video?.room) throw new Error("the token names no LiveKit room");
  return payload.video.room;
}

/** A LiveKit token signed with the dev stack's API key (as only control may mint them). */
export function mintLiveKitToken(claims: object, ttlSecs = 60): string {
  const devDir = process.env.KOINOS_DEV_DIR ?? fileURLToPath(new URL("../../../.dev/", import.meta.url));
  const keys = /^keys:\n\s+([A-Za-z0-9_-]+):\s*"([^"]+)"/m.exec(readFileSync(join(devDir, "livekit.yaml"), "utf8"));
  if (!keys?.[1] || !keys[2]) throw new Error("no API key in the dev stack's livekit.yaml");
  const b64 = (value: object): string => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ iss: keys[1], nbf: now - 5, exp: now + ttlSecs, ...claims })}`;
  return `${unsigned}.${createHmac("sha256", keys[2]).update(unsigned).digest("base64url")}`;
}

/**
 * Deletes a LiveKit room with LiveKit's own RoomService and the dev stack's API key, as LiveKit
 * itself closes an empty room after its departure timeout (nobody ends the call).
 */
export async function deleteLiveKitRoom(room: string): Promise<void> {
  const token = mintLiveKitToken({ video: { roomCreate: true } });
  const response = await fetch("http://127.0.0.1:7881/twirp/livekit.RoomService/DeleteRoom", {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ room }),
  });
  if (!response.ok) throw new Error(`LiveKit DeleteRoom: ${response.status} ${await response.text()}`);
}

/** supervisorctl on the dev stack (`dev/stack ctl`): restart, signal, stop, start, pid; its output. */
export function stackCtl(...args: string[]): string {
  return execFileSync(`${DEV_DIR}stack`, ["ctl", ...args], { encoding: "utf8" }).trim();
}

/** `dev/stack ctl …` without waiting for it (a restart takes as long as the component's stop). */
export function stackCtlInBackground(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(`${DEV_DIR}stack`, ["ctl", ...args], { encoding: "utf8" }, (err, stdout) => {
      if (err) reject(new Error(`dev/stack ctl ${args.join(" ")}: ${err.message}`));
      else resolve(stdout.trim());
    });
  });
}

/**
 * Does `fault` to a supervised dev-stack component (a restart by default) and waits until its
 * next process accepts connections on `port`, then until the fault's own command has returned;
 * when the fault began and when the port accepted (ms since the epoch). The old process's end is what is watched, not a refused connection:
 * coturn's restart closes its port for a few milliseconds only, less than any poll interval.
 */
export async function replacedAndAccepting(
  program: string,
  port: number,
  fault: () => Promise<string> = () => stackCtlInBackground("restart", program),
): Promise<{ faultAt: number; upAt: number }> {
  const oldPid = stackCtl("pid", program);
  if (!/^[1-9][0-9]*$/.test(oldPid)) throw new Error(`${program} is not running (pid: ${oldPid})`);
  const faultAt = Date.now();
  const done = fault();
  await expect.poll(() => existsSync(`/proc/${oldPid}`), { timeout: 60_000, intervals: [20] }).toBe(false);
  await expect.poll(() => accepts(port), { timeout: 60_000, intervals: [50] }).toBe(true);
  const upAt = Date.now();
  await done;
  return { faultAt, upAt };
}

/**
 * A gateway of the test's own, like the stack's first one (its binary and configuration) but on
 * a free port: a process the test may kill with no supervisor starting it again.
 */
export class OwnGateway {
  private constructor(
    readonly port: number,
    private readonly child: ChildProcess,
  ) {}

  static async start(): Promise<OwnGateway> {
    const pid = stackCtl("pid", "gateway");
    // Its command line names the binary by path: /proc/PID/exe would be "… (deleted)" once a
    // later build replaced the file (as `cargo test` does while the stack runs).
    const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((a) => a !== "");
    const [exe] = args;
    const config = args[args.indexOf("--config") + 1];
    if (!exe || !config) throw new Error(`no binary or --config in the stack gateway's command line: ${args.join(" ")}`);
    const port = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, "127.0.0.1", () => {
        const free = (probe.address() as net.AddressInfo).port;
        probe.close(() => resolve(free));
      });
    });
    const child = spawn(exe, ["--config", config], {
      env: { ...process.env, KOINOS_GATEWAY_LISTEN: `127.0.0.1:${port}` },
      stdio: "ignore",
    });
    const gateway = new OwnGateway(port, child);
    // Ready: caught up with control's revocations.
    await expect
      .poll(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status, { timeout: 30_000 })
      .toBe(200);
    return gateway;
  }

  /** SIGKILL, as a crash or a lost node. */
  kill(): void {
    this.child.kill("SIGKILL");
  }
}

/**
 * Runs `body` with a gateway of the test's own behind a balancer that sends connections to the
 * stack's first gateway once that one is dead (as a load balancer's health check would): the
 * test kills `doomed` to see signalling move. Both are gone afterwards.
 */
export async function withDoomedGateway(body: (doomed: OwnGateway, balancer: Balancer, balancerPort: number) => Promise<void>): Promise<void> {
  const doomed = await OwnGateway.start();
  const balancer = new Balancer(doomed.port, Number(process.env.KOINOS_GATEWAY_PORT ?? 7880));
  const balancerPort = await balancer.listen();
  try {
    await body(doomed, balancer, balancerPort);
  } finally {
    doomed.kill();
    await balancer.close();
  }
}

/** Whether something accepts TCP connections on localhost:`port` now. */
export function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.setTimeout(500);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(false));
  });
}
