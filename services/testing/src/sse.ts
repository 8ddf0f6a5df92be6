/** One server-sent event: its data lines joined with "\n". */
export interface SseEvent {
  data: string;
}

export interface SseBody {
  events: SseEvent[];
  /** Comment lines (":" prefix) without the colon and one following space, e.g. keep-alives. */
  comments: string[];
}

/** The body is not strict SSE as the consumer API writes it. */
export class SseFormatError extends Error {
  constructor(
    message: string,
    /** 1-based line number of the offending line. */
    readonly line: number,
  ) {
    super(`${message} (line ${line})`);
    this.name = "SseFormatError";
  }
}

/**
 * Reads a fetch Response as a strict SSE stream: content type text/event-stream, LF line endings
 * only, `data:` fields and comments only, every event closed by a blank line, and no partial line or
 * event at the end. Throws SseFormatError on any deviation.
 */
export async function readSse(response: Response): Promise<SseBody> {
  const contentType = response.headers.get("content-type") ?? "";
  if (!contentType.startsWith("text/event-stream")) {
    throw new SseFormatError(`content-type is ${JSON.stringify(contentType)}, not text/event-stream`, 0);
  }
  return parseSse(await response.text());
}

/** Parses an SSE body strictly (see readSse). */
export function parseSse(text: string): SseBody {
  const events: SseEvent[] = [];
  const comments: string[] = [];
  const lines = text.split("\n");
  const crAt = text.indexOf("\r");
  if (crAt >= 0) {
    throw new SseFormatError("carriage return in SSE body; lines must end with LF", lineOf(text, crAt));
  }
  if (lines.pop() !== "") throw new SseFormatError("body ended in the middle of a line", lines.length + 1);
  let data: string[] = [];
  lines.forEach((line, index) => {
    if (line === "") {
      if (data.length > 0) events.push({ data: data.join("\n") });
      data = [];
    } else if (line.startsWith(":")) {
      comments.push(withoutLeadingSpace(line.slice(1)));
    } else {
      data.push(dataValue(line, index + 1));
    }
  });
  if (data.length > 0) {
    throw new SseFormatError("body ended in the middle of an event (no blank line after it)", lines.length);
  }
  return { events, comments };
}

function dataValue(line: string, lineNumber: number): string {
  const colon = line.indexOf(":");
  const field = colon < 0 ? line : line.slice(0, colon);
  if (field !== "data") throw new SseFormatError(`unexpected SSE field ${JSON.stringify(field)}`, lineNumber);
  return colon < 0 ? "" : withoutLeadingSpace(line.slice(colon + 1));
}

function withoutLeadingSpace(value: string): string {
  return value.startsWith(" ") ? value.slice(1) : value;
}

function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let i = text.indexOf("\n"); i >= 0 && i < offset; i = text.indexOf("\n", i + 1)) line++;
  return line;
}
