import { useSyncExternalStore } from "react";

export type Route = { name: "cases" } | { name: "case"; roomId: string };

export function parseHash(hash: string): Route {
  const m = /^#\/case\/(.+)$/.exec(hash);
  if (m?.[1]) {
    try {
      return { name: "case", roomId: decodeURIComponent(m[1]) };
    } catch {
      return { name: "cases" };
    }
  }
  return { name: "cases" };
}

export function caseHref(roomId: string): string {
  return `#/case/${encodeURIComponent(roomId)}`;
}

export function navigate(href: string): void {
  if (window.location.hash !== href) window.location.hash = href;
}

function subscribe(cb: () => void): () => void {
  window.addEventListener("hashchange", cb);
  return () => window.removeEventListener("hashchange", cb);
}

function getHash(): string {
  return window.location.hash;
}

export function useRoute(): Route {
  const hash = useSyncExternalStore(subscribe, getHash);
  return parseHash(hash);
}
