/**
 * P4's baseline clients: sockets that open, send EdgeFlow's connect frame and then stay idle —
 * the least a device does. Forked by bench/p4-tunnels.ts; reports its connected count over IPC.
 */
import WebSocket from 'ws';

interface Start {
  type: 'start';
  url: string;
  count: number;
  prefix: string;
}

const WAVE = 500;
const sockets: WebSocket[] = [];
let connected = 0;

async function open(url: string, deviceId: string): Promise<void> {
  const socket = new WebSocket(url, { perMessageDeflate: false });
  sockets.push(socket);
  socket.on('error', () => {});
  await new Promise<void>((resolve) => {
    socket.once('open', () => {
      socket.send(JSON.stringify({ type: 'connect', device_id: deviceId, api_key: 'baseline', version: '1.0.0' }));
    });
    socket.once('message', () => {
      connected++;
      resolve();
    });
    socket.once('close', () => resolve());
  });
}

process.on('message', async (message: Start | { type: 'stop' }) => {
  if (message.type === 'stop') {
    for (const socket of sockets) socket.terminate();
    process.exit(0);
  }
  const reporter = setInterval(() => process.send!({ type: 'connected', connected }), 250);
  for (let i = 0; i < message.count; i += WAVE) {
    const wave = Array.from({ length: Math.min(WAVE, message.count - i) }, (_, k) => `${message.prefix}${i + k}`);
    await Promise.all(wave.map((deviceId) => open(message.url, deviceId)));
  }
  process.send!({ type: 'connected', connected });
  clearInterval(reporter);
});
process.on('disconnect', () => process.exit(0));
