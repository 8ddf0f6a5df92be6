/**
 * The signed-in API key, kept in this tab's session storage only: it never goes into a URL, a
 * cookie or local storage, and it is gone when the tab closes (or on sign-out).
 */
const KEY = "darkbloom.console.apiKey";

export function apiKey(): string | undefined {
  return sessionStorage.getItem(KEY) ?? undefined;
}

export function signIn(key: string): void {
  sessionStorage.setItem(KEY, key);
}

export function signOut(): void {
  sessionStorage.removeItem(KEY);
}
