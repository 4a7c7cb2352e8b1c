/**
 * P4's baseline: a bare `ws` server that does the least a tunnel endpoint must — accept the
 * socket, answer the connect frame — and nothing else. Run with --expose-gc through fork().
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
process.on('message', (message: { type: string }) => {
  if (message.type === 'gc') {
    globalThis.gc?.();
    process.send!({ type: 'gc-done', sockets: wss.clients.size, memory: process.memoryUsage() });
  }
});
process.on('disconnect', () => process.exit(0));
