// Firestore emulator for the local stack.
// The package's own start() binds 0.0.0.0; we bind the gRPC server to loopback ourselves and add
// a small HTTP side door for health checks and resets between tests (the package has neither).
"use strict";
const http = require("node:http");
const { ServerCredentials } = require("@grpc/grpc-js");
const { FirestoreServer } = require("@firestore-emulator/server");

const host = process.env.FIRESTORE_HOST || "127.0.0.1";
const grpcPort = Number(process.env.FIRESTORE_PORT || 8080);
const adminPort = Number(process.env.FIRESTORE_ADMIN_PORT || grpcPort + 1);

const emulator = new FirestoreServer();
// `server` is private in the package's TypeScript only; it is a plain property at run time.
emulator.server.bindAsync(`${host}:${grpcPort}`, ServerCredentials.createInsecure(), (err) => {
  if (err) {
    console.error(`firestore: cannot bind ${host}:${grpcPort}: ${err.message}`);
    process.exit(1);
  }
  console.log(`firestore: gRPC on ${host}:${grpcPort}`);
});

const admin = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"status":"ok"}');
  } else if (req.url === "/reset" && (req.method === "POST" || req.method === "DELETE")) {
    emulator.state.clear();
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"status":"reset"}');
  } else {
    res.writeHead(404, { "content-type": "application/json" });
    res.end('{"error":"not found"}');
  }
});
admin.listen(adminPort, host, () => console.log(`firestore: admin on http://${host}:${adminPort}`));

const stop = () => {
  admin.close();
  emulator.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
