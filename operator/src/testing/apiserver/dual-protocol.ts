import type { Server as HttpServer } from "node:http";
import type { Server as HttpsServer } from "node:https";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { Duplex } from "node:stream";

/**
 * A stream that yields `first` and then whatever the socket receives. A TLS server reads a plain
 * socket's handle directly, so bytes pushed back with unshift() never reach it; a Duplex it wraps
 * instead goes through JavaScript, replayed bytes included.
 */
function replaying(socket: Socket, first: Buffer): Duplex {
  const stream = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk, encoding, callback) {
      socket.write(chunk, encoding, callback);
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(error, callback) {
      socket.destroy(error ?? undefined);
      callback(error);
    },
  });
  stream.push(first);
  socket.on("data", (chunk: Buffer) => {
    if (!stream.push(chunk)) socket.pause();
  });
  socket.on("end", () => stream.push(null));
  socket.on("error", (error) => stream.destroy(error));
  socket.on("close", () => stream.destroy());
  return stream;
}

/**
 * Serves plain HTTP and TLS on one port of 127.0.0.1: the first byte of a connection tells them
 * apart (0x16 starts a TLS handshake).
 */
export async function listenDual(
  http: HttpServer,
  https: HttpsServer,
): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const front = createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.once("data", (first: Buffer) => {
      socket.pause();
      if (first[0] === 0x16) {
        https.emit("connection", replaying(socket, first));
        return;
      }
      socket.unshift(first);
      http.emit("connection", socket);
      socket.resume();
    });
  });
  await new Promise<void>((resolve, reject) => {
    front.once("error", reject);
    front.listen(0, "127.0.0.1", resolve);
  });
  return {
    port: (front.address() as AddressInfo).port,
    close: async () => {
      const closed = new Promise<void>((resolve) => front.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
