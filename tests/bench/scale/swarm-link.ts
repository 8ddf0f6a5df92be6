// The drills' handle on a provider-swarm process.
import { ChildLink, childScript } from "./process-link.js";
import type { RegisterReply, RegisterRequest, SwarmRequest, SwarmStats } from "./provider-swarm.js";

export class SwarmProcess {
  private constructor(private readonly link: ChildLink<SwarmRequest, unknown, { pid: number }>) {}

  static async start(): Promise<SwarmProcess> {
    return new SwarmProcess(
      await ChildLink.start<SwarmRequest, unknown, { pid: number }>(childScript("provider-swarm"), []),
    );
  }

  get pid(): number {
    return this.link.pid;
  }

  /** Creates and registers the request's providers; resolves when every one registered or failed. */
  async register(request: Omit<RegisterRequest, "type">): Promise<RegisterReply> {
    return (await this.link.request({ type: "register", ...request })) as RegisterReply;
  }

  async stats(): Promise<SwarmStats> {
    return (await this.link.request({ type: "stats" })) as SwarmStats;
  }

  /** Stops every provider gracefully (each stream ended), then the process. */
  stop(): Promise<void> {
    return this.link.stop({ type: "stop" }, 30_000);
  }

  kill(): void {
    this.link.kill();
  }
}
