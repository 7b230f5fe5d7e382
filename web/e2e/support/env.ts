import { fileURLToPath } from "node:url";

/** The dev stack's defaults, shared by the fixtures and every helper. */
export const DEMO_PASSWORD = process.env.KOINOS_DEMO_PASSWORD ?? "koinos-dev";
export const DEMO_CASE = process.env.KOINOS_DEMO_CASE ?? "Demo case";
/** The seeded case whose room is end-to-end encrypted (dev/seed.py). */
export const ENCRYPTED_CASE = process.env.KOINOS_ENCRYPTED_CASE ?? "Encrypted case";
/** Connecting to LiveKit on a loaded 2-core box can take a while. */
export const CONNECT_TIMEOUT = 60_000;
export const DEV_DIR = fileURLToPath(new URL("../../../dev/", import.meta.url));
