import { useState, type FormEvent } from "react";
import { useSession } from "../auth/ClientContext";
import { ErrorMessage } from "../errors/ErrorMessage";
import { toAppError, type AppError } from "../errors/errors";
import { caseHref, navigate } from "../router";
import { createCase } from "./caseRooms";
import { useCaseRooms } from "./useCaseRooms";

export function CaseList() {
  const { client } = useSession();
  const rooms = useCaseRooms(client);
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<AppError | undefined>(undefined);

  const submit = (e: FormEvent<HTMLFormElement>): void => {
    e.preventDefault();
    const trimmed = name.trim();
    if (trimmed === "" || busy) return;
    setBusy(true);
    setError(undefined);
    createCase(client, trimmed)
      .then((roomId) => {
        setName("");
        navigate(caseHref(roomId));
      })
      .catch((err: unknown) => setError(toAppError(err)))
      .finally(() => setBusy(false));
  };

  return (
    <main className="cases">
      <h1>Cases</h1>
      {rooms.length === 0 ? (
        <p data-testid="no_cases">You are not a member of any case yet.</p>
      ) : (
        <ul className="case-list" aria-label="Cases">
          {rooms.map((room) => (
            <li key={room.roomId}>
              <a className="case-entry" data-testid="case_entry" data-room-id={room.roomId} href={caseHref(room.roomId)}>
                {room.name}
              </a>
            </li>
          ))}
        </ul>
      )}
      <form className="card new-case" onSubmit={submit} aria-label="New case">
        <label htmlFor="new-case-name">Case name</label>
        <input
          id="new-case-name"
          value={name}
          onChange={(e) => setName(e.target.value)}
          placeholder="e.g. Cardiology review – patient 42"
          maxLength={200}
        />
        <button type="submit" disabled={busy || name.trim() === ""}>
          {busy ? "Creating…" : "New case"}
        </button>
        <ErrorMessage error={error} testId="new_case_error" />
      </form>
    </main>
  );
}
