/**
 * P4's (and P1's) baseline: a bare `ws` server that does the least a tunnel endpoint must —
 * accept the socket, answer the connect frame — and nothing else; on request it broadcasts one
 * message to every socket and says how long until every write was handed to the kernel.
 * Run with --expose-gc through fork().
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';

const server = http.createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (socket) => {
  socket.once('message', (data) => {
    const frame = JSON.parse(data.toString()) as { type?: string; device_id?: string };
    if (frame.type === 'connect') socket.send(JSON.stringify({ type: 'connected', device_id: frame.device_id }));
  });
  socket.on('error', () => {});
});

server.listen(0, '127.0.0.1', () => {
  process.send!({ type: 'listening', port: (server.address() as AddressInfo).port });
});
process.on('message', (message: { type: string; text?: string }) => {
  if (message.type === 'broadcast') {
    const started = performance.now();
    let pending = wss.clients.size;
    for (const socket of wss.clients) {
      socket.send(message.text!, () => {
        if (--pending === 0) process.send!({ type: 'broadcast-done', ms: performance.now() - started });
      });
    }
    return;
  }
  if (message.type === 'gc') {
    globalThis.gc?.();
    process.send!({ type: 'gc-done', sockets: wss.clients.size, memory: process.memoryUsage() });
  }
});
process.on('disconnect', () => process.exit(0));
