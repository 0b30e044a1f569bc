// Bun's built-in WebSocket pub/sub server speaking wsop (see README.md): echo and fan-out
// in Bun's idiom (ws.subscribe + server.publish). Run: bun bun-server.js [port] [--tls cert key]
// Prints "bun listening on ws://127.0.0.1:PORT/ pid=PID" when ready.
const args = process.argv.slice(2);
const tlsAt = args.indexOf("--tls");
const tls = tlsAt >= 0 ? { cert: Bun.file(args[tlsAt + 1]), key: Bun.file(args[tlsAt + 2]) } : undefined;
const port = Number(args.find((a, i) => /^\d+$/.test(a) && (tlsAt < 0 || i < tlsAt)) ?? 0);

const E = 0x45, S = 0x53, A = 0x41, P = 0x50;
const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  tls,
  fetch(req, server) {
    if (server.upgrade(req)) return;
    return new Response("WebSocket only\n", { status: 426 });
  },
  websocket: {
    perMessageDeflate: false,
    message(ws, msg) {
      if (typeof msg === "string") return ws.close(1003, "binary only");
      switch (msg[0]) {
        case E:
          ws.send(msg);
          break;
        case P: {
          const n = msg[1];
          server.publish(msg.toString("latin1", 2, 2 + n), msg.subarray(2 + n));
          break;
        }
        case S: {
          ws.subscribe(msg.toString("utf8", 1));
          msg[0] = A;
          ws.send(msg);
          break;
        }
        default:
          ws.close(1003, "unknown op");
      }
    },
  },
});
console.log(`bun listening on ${tls ? "wss" : "ws"}://127.0.0.1:${server.port}/ pid=${process.pid}`);
