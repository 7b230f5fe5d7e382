import { describe, expect, it } from "vitest";
import contract from "../../../proto/contract/matrix.json";
import { MATRIX_USER_ATTRIBUTE, matrixUserOf, userIdFromIdentity } from "./participantIdentity";

describe("whose participant this is", () => {
  it("reads the Matrix user attribute named by the shared contract", () => {
    expect(MATRIX_USER_ATTRIBUTE).toBe(contract.participant_attributes.matrix_user);
  });

  it("takes the attribute over the identity, so an Element Call participant's hashed identity still names its user", () => {
    const elementCall = {
      identity: "Qy3R17dx0HjiF/Yh1Ub+CPOYXtpsehdZ3DqpBh2SSRg",
      attributes: { [MATRIX_USER_ATTRIBUTE]: "@carol:clinic.example" },
    };
    expect(matrixUserOf(elementCall)).toBe("@carol:clinic.example");
    const ours = { identity: "@bob:clinic.example:DEVICE", attributes: { [MATRIX_USER_ATTRIBUTE]: "@bob:clinic.example" } };
    expect(matrixUserOf(ours)).toBe("@bob:clinic.example");
  });

  it("falls back to the device identity only without the attribute", () => {
    expect(matrixUserOf({ identity: "@bob:localhost:DEV", attributes: {} })).toBe("@bob:localhost");
    expect(matrixUserOf({ identity: "@bob:example.org:8448:DEV", attributes: {} })).toBe("@bob:example.org:8448");
    expect(matrixUserOf({ identity: "Qy3R17dx0HjiF", attributes: {} })).toBeUndefined();
    expect(userIdFromIdentity("@bob")).toBeUndefined();
  });
});
