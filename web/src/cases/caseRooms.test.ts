import { describe, expect, it } from "vitest";
import contract from "../../../proto/contract/case-room.json";
import { CALL_MEMBER_EVENT_TYPE, CASE_ROOM_TYPE, caseRoomRequest, creatorsArePrivileged } from "./caseRooms";

describe("a case room as the page creates it", () => {
  it("has the contract's type, preset and event levels, with call memberships open to members", () => {
    const request = caseRoomRequest("  Mme D., 54  ", "@alice:clinic.example", "10");
    expect(request.name).toBe("Mme D., 54");
    expect(request.creation_content.type).toBe(contract.type);
    expect(CASE_ROOM_TYPE).toBe(contract.type);
    expect(request.preset).toBe("private_chat");
    expect(request.power_level_content_override.events).toEqual(contract.event_power_levels);
    expect(request.power_level_content_override.events[CALL_MEMBER_EVENT_TYPE]).toBe(0);
  });

  it("is end-to-end encrypted, with its call's MatrixRTC slot open for per-member media keys", () => {
    const request = caseRoomRequest("Case", "@alice:clinic.example", "10");
    expect(request.initial_state).toEqual(contract.initial_state);
    expect(request.initial_state).toContainEqual({ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } });
    const slot = request.initial_state.find((event) => event.type === "org.matrix.msc4143.rtc.slot");
    expect(slot?.state_key).toBe("m.call#ROOM");
    expect(slot?.content).toEqual({ status: "open", application: { type: "m.call" }, encryption: { type: "org.matrix.msc4143.per_member" } });
    expect(request.power_level_content_override.events["org.matrix.msc4143.rtc.slot"]).toBe(100);
  });

  it("gives control's service account (invited) and the creator the admin level", () => {
    const request = caseRoomRequest("Case", "@alice:clinic.example", "11");
    expect(request.invite).toEqual(["@koinos-rtc:clinic.example"]);
    expect(request.power_level_content_override.users).toEqual({
      "@koinos-rtc:clinic.example": 100,
      "@alice:clinic.example": 100,
    });
  });

  it("does not list the creator where room versions make creators privileged", () => {
    const request = caseRoomRequest("Case", "@alice:clinic.example", "12");
    expect(request.power_level_content_override.users).toEqual({ "@koinos-rtc:clinic.example": 100 });
  });

  it("decides privileged creators as the contract's room-version cases say", () => {
    for (const { version, creators_privileged } of contract.room_versions) {
      expect(creatorsArePrivileged(version), `room version ${JSON.stringify(version)}`).toBe(creators_privileged);
    }
    expect(creatorsArePrivileged(undefined)).toBe(false);
  });
});
