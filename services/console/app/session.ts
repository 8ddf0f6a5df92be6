/**
 * The signed-in key and what it is (a consumer's API key, or the coordinator's admin key), kept in
 * this tab's session storage only: never in a URL, a cookie or local storage, and gone when the tab
 * closes (or on sign-out).
 */
const KEY = "darkbloom.console.apiKey";
const KIND = "darkbloom.console.kind";

export type KeyKind = "account" | "admin";

export function apiKey(): string | undefined {
  return sessionStorage.getItem(KEY) ?? undefined;
}

export function keyKind(): KeyKind {
  return sessionStorage.getItem(KIND) === "admin" ? "admin" : "account";
}

export function signIn(key: string, kind: KeyKind): void {
  sessionStorage.setItem(KEY, key);
  sessionStorage.setItem(KIND, kind);
}

export function signOut(): void {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(KIND);
}
