// Node's `ws` speaking wsop (see README.md): echo, and fan-out by looping over the topic's
// subscribers and sending to each. Run: node node-ws-server.js [port]
// Prints "node-ws listening on ws://127.0.0.1:PORT/ pid=PID" when ready.
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] ?? 0);
const E = 0x45, S = 0x53, A = 0x41, P = 0x50;
const topics = new Map(); // topic -> Set of sockets

const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
wss.on("connection", (ws) => {
  const mine = [];
  ws.on("message", (msg, isBinary) => {
    if (!isBinary) return ws.close(1003, "binary only");
    switch (msg[0]) {
      case E:
        ws.send(msg);
        break;
      case P: {
        const n = msg[1];
        const subs = topics.get(msg.toString("latin1", 2, 2 + n));
        if (subs) {
          const body = msg.subarray(2 + n);
          for (const s of subs) s.send(body);
        }
        break;
      }
      case S: {
        const t = msg.toString("utf8", 1);
        let subs = topics.get(t);
        if (!subs) topics.set(t, (subs = new Set()));
        subs.add(ws);
        mine.push(t);
        msg[0] = A;
        ws.send(msg);
        break;
      }
      default:
        ws.close(1003, "unknown op");
    }
  });
  ws.on("close", () => {
    for (const t of mine) {
      const subs = topics.get(t);
      subs.delete(ws);
      if (subs.size === 0) topics.delete(t);
    }
  });
});
wss.on("listening", () => {
  console.log(`node-ws listening on ws://127.0.0.1:${wss.address().port}/ pid=${process.pid}`);
});
