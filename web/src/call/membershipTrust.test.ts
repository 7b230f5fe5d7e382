import { describe, expect, it } from "vitest";
import contract from "../../../proto/contract/call-member-state-keys.json";
import { hasLeftRoom, stateKeyOwner } from "./membershipTrust";

describe("stateKeyOwner", () => {
  it("names the owner of every shared case as control's state_key_owner does", () => {
    expect(contract.cases.length).toBeGreaterThan(10);
    for (const { state_key, owner } of contract.cases) {
      expect(stateKeyOwner(state_key) ?? null, `state key ${JSON.stringify(state_key)}`).toBe(owner);
    }
  });
});

describe("hasLeftRoom", () => {
  const roomWith = (members: Record<string, string>) => ({
    getMember: (userId: string) => (userId in members ? ({ membership: members[userId] } as never) : null),
  });

  it("voids the membership of someone removed, banned or gone, not of a member or an unknown", () => {
    const room = roomWith({ "@a:s": "join", "@b:s": "leave", "@c:s": "ban", "@d:s": "invite" });
    expect(hasLeftRoom(room, "@a:s")).toBe(false);
    expect(hasLeftRoom(room, "@b:s")).toBe(true);
    expect(hasLeftRoom(room, "@c:s")).toBe(true);
    expect(hasLeftRoom(room, "@d:s")).toBe(true);
    expect(hasLeftRoom(room, "@unknown:s")).toBe(false);
  });
});
