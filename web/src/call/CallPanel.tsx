import type { AppError } from "../errors/errors";
import { ErrorMessage } from "../errors/ErrorMessage";
import type { RtcSessionState } from "./useRtcSession";

interface Props {
  rtc: RtcSessionState;
  error: AppError | undefined;
  onStart: () => void;
}

/** Case view panel when this device is not in the call: is a call running, who is in it, Start/Join. */
export function CallPanel({ rtc, error, onStart }: Props) {
  const running = rtc.othersInCall;
  return (
    <section className="call-panel card" aria-label="Call" data-testid="call_panel" data-running={running ? "true" : "false"}>
      <h2>Call</h2>
      {!rtc.ready ? (
        <p data-testid="call_state">Checking for a running call…</p>
      ) : running ? (
        <p data-testid="call_state">
          A call is running with {rtc.participants.length} {rtc.participants.length === 1 ? "participant" : "participants"}.
        </p>
      ) : (
        <p data-testid="call_state">No call is running.</p>
      )}
      {rtc.participants.length > 0 && (
        <ul className="call-participants" data-testid="call_participants" aria-label="In the call">
          {rtc.participants.map((p) => (
            <li key={p.key} data-testid="call_participant" data-user-id={p.userId} data-device-id={p.deviceId}>
              {p.displayName}
              {p.isMe ? " (this device)" : ""}
            </li>
          ))}
        </ul>
      )}
      {rtc.ready && (
        <button type="button" className="primary" onClick={onStart}>
          {running ? "Join call" : "Start call"}
        </button>
      )}
      <ErrorMessage error={error} testId="call_error" />
    </section>
  );
}
