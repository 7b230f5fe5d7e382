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
