/** Micro-dollars as dollars with cents ($1,234.56), exact below a cent where it matters ($0.0042). */
export function usd(micro: number): string {
  const dollars = micro / 1_000_000;
  const digits = micro !== 0 && Math.abs(dollars) < 0.01 ? 6 : 2;
  return dollars.toLocaleString("en-US", {
    style: "currency",
    currency: "USD",
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

export function count(n: number): string {
  return n.toLocaleString("en-US");
}

/** A Unix time (seconds) as local date and time. */
export function when(seconds: number): string {
  return new Date(seconds * 1000).toLocaleString("en-US", { dateStyle: "medium", timeStyle: "short" });
}

/** The local calendar day of a Unix time, YYYY-MM-DD (sorts as it reads). */
export function day(seconds: number): string {
  const d = new Date(seconds * 1000);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}
