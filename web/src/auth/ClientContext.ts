import { createContext, useContext } from "react";
import type { MatrixClient } from "matrix-js-sdk";
import type { AppConfig } from "../config/config";

export interface SessionContextValue {
  client: MatrixClient;
  config: AppConfig;
  userId: string;
  deviceId: string;
}

export const SessionContext = createContext<SessionContextValue | null>(null);

export function useSession(): SessionContextValue {
  const value = useContext(SessionContext);
  if (!value) throw new Error("useSession outside a signed-in session");
  return value;
}
