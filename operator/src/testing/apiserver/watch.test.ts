import { describe, expect, it } from "vitest";
import { startFakeApiServer } from "./index.js";
import { openWatch, useFakeApiServer } from "./test-client.js";

// Watches over plain HTTP: initial state, replay from a resourceVersion, 410 Expired, bookmarks,
// selectors, timeouts and server-side closing.

const { api, server } = useFakeApiServer({
  historyLimit: 5,
  bookmarkIntervalMs: 50,
  watchCloseAfterMs: [60_000, 60_000],
});

const CM = "/api/v1/namespaces/default/configmaps";

const configMap = (name: string, labels: Record<string, string> = {}) => ({
  metadata: { name, labels },
  data: { v: "1" },
});

describe("watch", () => {
  it("without a resourceVersion: ADDED for what exists, then live ADDED, MODIFIED and DELETED", async () => {
    await api.post(CM, configMap("w1"));
    const watch = await openWatch(server(), `${CM}?watch=true`);
    expect(watch.status).toBe(200);
    const first = await watch.next();
    expect(first.type).toBe("ADDED");
    expect(first.object.metadata.name).toBe("w1");
    expect(first.object.kind).toBe("ConfigMap");

    await api.post(CM, configMap("w2"));
    expect((await watch.next()).type).toBe("ADDED");
    await api.patch(`${CM}/w2`, { data: { v: "2" } }, "application/merge-patch+json");
    const modified = await watch.next();
    expect(modified.type).toBe("MODIFIED");
    expect(modified.object.data.v).toBe("2");
    const del = await api.delete(`${CM}/w2`);
    const deleted = await watch.next();
    expect(deleted.type).toBe("DELETED");
    expect(deleted.object.metadata.name).toBe("w2");
    expect(Number(deleted.object.metadata.resourceVersion)).toBeGreaterThan(
      Number(modified.object.metadata.resourceVersion),
    );
    expect(del.status).toBe(200);
    watch.close();
  });

  it("from a resourceVersion: replays what happened after it", async () => {
    const list = await api.get(CM);
    const rv = list.body.metadata.resourceVersion;
    await api.post(CM, configMap("w3"));
    await api.patch(`${CM}/w3`, { data: { v: "3" } }, "application/merge-patch+json");
    const watch = await openWatch(server(), `${CM}?watch=1&resourceVersion=${rv}`);
    expect((await watch.next()).type).toBe("ADDED");
    expect((await watch.next()).type).toBe("MODIFIED");
    await expect(watch.next(100)).rejects.toThrow("no watch event in time");
    watch.close();
  });

  it("from a resourceVersion older than the history: one ERROR event with 410 Expired, then the end", async () => {
    const rv = (await api.get(CM)).body.metadata.resourceVersion;
    for (let i = 0; i < 7; i++)
      await api.patch(`${CM}/w3`, { data: { v: `${i}` } }, "application/merge-patch+json");
    const watch = await openWatch(server(), `${CM}?watch=true&resourceVersion=${rv}`);
    const error = await watch.next();
    expect(error.type).toBe("ERROR");
    expect(error.object).toMatchObject({ kind: "Status", status: "Failure", code: 410, reason: "Expired" });
    expect(error.object.message).toMatch(new RegExp(`^too old resource version: ${rv} \\(\\d+\\)$`));
    await watch.ended;
  });

  it("compactHistory() makes every older resourceVersion expire", async () => {
    const rv = (await api.get(CM)).body.metadata.resourceVersion;
    await api.patch(`${CM}/w3`, { data: { v: "after" } }, "application/merge-patch+json");
    server().compactHistory();
    const old = await openWatch(server(), `${CM}?watch=true&resourceVersion=${rv}`);
    expect((await old.next()).object.code).toBe(410);
    const current = (await api.get(CM)).body.metadata.resourceVersion;
    const fresh = await openWatch(server(), `${CM}?watch=true&resourceVersion=${current}`);
    await api.post(CM, configMap("w4"));
    expect((await fresh.next()).type).toBe("ADDED");
    fresh.close();
  });

  it("sends bookmarks with only apiVersion, kind and resourceVersion", async () => {
    const rv = (await api.get(CM)).body.metadata.resourceVersion;
    const watch = await openWatch(
      server(),
      `${CM}?watch=true&allowWatchBookmarks=true&resourceVersion=${rv}`,
    );
    const bookmark = await watch.next();
    expect(bookmark).toEqual({
      type: "BOOKMARK",
      object: { kind: "ConfigMap", apiVersion: "v1", metadata: { resourceVersion: rv } },
    });
    watch.close();
  });

  it("filters by label selector, turning objects that leave the selection into DELETED", async () => {
    const watch = await openWatch(server(), `${CM}?watch=true&labelSelector=team%3Dblue`);
    await api.post(CM, configMap("red", { team: "red" }));
    await api.post(CM, configMap("blue", { team: "blue" }));
    const added = await watch.next();
    expect(added.type).toBe("ADDED");
    expect(added.object.metadata.name).toBe("blue");
    await api.patch(
      `${CM}/blue`,
      { metadata: { labels: { team: "green" } } },
      "application/merge-patch+json",
    );
    expect((await watch.next()).type).toBe("DELETED");
    await api.patch(`${CM}/red`, { metadata: { labels: { team: "blue" } } }, "application/merge-patch+json");
    const entered = await watch.next();
    expect(entered.type).toBe("ADDED");
    expect(entered.object.metadata.name).toBe("red");
    watch.close();
  });

  it("watches all namespaces and a field selector on the name", async () => {
    const watch = await openWatch(
      server(),
      "/api/v1/configmaps?watch=true&fieldSelector=metadata.name%3Dsolo",
    );
    await api.post("/api/v1/namespaces/kube-system/configmaps", configMap("solo"));
    const event = await watch.next();
    expect(event.object.metadata).toMatchObject({ name: "solo", namespace: "kube-system" });
    watch.close();
  });

  it("honours timeoutSeconds, and closeWatches() ends every stream", async () => {
    const started = Date.now();
    const timed = await openWatch(server(), `${CM}?watch=true&timeoutSeconds=1&resourceVersion=0`);
    await timed.ended;
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    const open = await openWatch(server(), `${CM}?watch=true`);
    server().closeWatches();
    await open.ended;
  });

  it("sends the initial events then a bookmark marking their end when asked to (watch-list)", async () => {
    const watch = await openWatch(
      server(),
      `${CM}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan`,
    );
    let event = await watch.next();
    while (event.type === "ADDED") event = await watch.next();
    expect(event.type).toBe("BOOKMARK");
    expect(event.object.metadata.annotations).toEqual({ "k8s.io/initial-events-end": "true" });
    watch.close();
  });
});

describe("server-side watch timeout", () => {
  it("closes streams after a random time in watchCloseAfterMs", async () => {
    const quick = await startFakeApiServer({ watchCloseAfterMs: [50, 100] });
    try {
      const watch = await openWatch(quick, "/api/v1/namespaces/default/configmaps?watch=true");
      const started = Date.now();
      await watch.ended;
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      await quick.close();
    }
  });
});
