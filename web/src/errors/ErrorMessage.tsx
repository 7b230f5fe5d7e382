import type { AppError } from "./errors";

export function ErrorMessage({ error, testId }: { error: AppError | undefined; testId?: string }) {
  if (!error) return null;
  return (
    <p className={`error error-${error.category}`} role="alert" data-testid={testId ?? "error"} data-category={error.category}>
      {error.message}
    </p>
  );
}
