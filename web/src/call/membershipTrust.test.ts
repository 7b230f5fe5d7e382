import { describe, expect, it } from "vitest";
import contract from "../../../proto/contract/call-member-state-keys.json";
import { stateKeyOwner } from "./membershipTrust";

describe("stateKeyOwner", () => {
  it("names the owner of every shared case as control's state_key_owner does", () => {
    expect(contract.cases.length).toBeGreaterThan(10);
    for (const { state_key, owner } of contract.cases) {
      expect(stateKeyOwner(state_key) ?? null, `state key ${JSON.stringify(state_key)}`).toBe(owner);
    }
  });
});
