import type { Participant } from "livekit-client";
import matrixContract from "../../../proto/contract/matrix.json";

/** The participant attribute naming its Matrix user, in every token control mints. */
export const MATRIX_USER_ATTRIBUTE: string = matrixContract.participant_attributes.matrix_user;

/** LiveKit identity `<user_id>:<device_id>` → Matrix user id (device ids contain no ':'). */
export function userIdFromIdentity(identity: string): string | undefined {
  if (!identity.startsWith("@")) return undefined;
  const last = identity.lastIndexOf(":");
  const first = identity.indexOf(":");
  if (last <= first) return undefined;
  return identity.slice(0, last);
}

/**
 * The Matrix user a LiveKit participant belongs to. Control writes it into every token it mints
 * as an attribute the participant cannot change; that is the answer whatever the identity looks
 * like (an Element Call participant's identity is MSC4195's hash, with no user id in it). Only a
 * participant without the attribute falls back to the `<user_id>:<device_id>` identity.
 */
export function matrixUserOf(participant: Pick<Participant, "identity" | "attributes">): string | undefined {
  const attribute = participant.attributes[MATRIX_USER_ATTRIBUTE];
  if (attribute && attribute.startsWith("@")) return attribute;
  return userIdFromIdentity(participant.identity);
}
