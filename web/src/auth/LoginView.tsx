import { useState, type FormEvent } from "react";
import type { AppError } from "../errors/errors";
import { ErrorMessage } from "../errors/ErrorMessage";

interface Props {
  onSubmit: (username: string, password: string) => Promise<void>;
  error: AppError | undefined;
}

export function LoginView({ onSubmit, error }: Props) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);

  const submit = (e: FormEvent<HTMLFormElement>): void => {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    void onSubmit(username, password).finally(() => setBusy(false));
  };

  return (
    <main className="login">
      <form className="card login-form" onSubmit={submit} aria-label="Sign in">
        <h1>Sign in to koinos-rtc</h1>
        <label htmlFor="login-username">Username</label>
        <input
          id="login-username"
          name="username"
          autoComplete="username"
          value={username}
          onChange={(e) => setUsername(e.target.value)}
          required
        />
        <label htmlFor="login-password">Password</label>
        <input
          id="login-password"
          name="password"
          type="password"
          autoComplete="current-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          required
        />
        <button type="submit" disabled={busy || username.trim() === "" || password === ""}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        <ErrorMessage error={error} testId="login_error" />
      </form>
    </main>
  );
}
