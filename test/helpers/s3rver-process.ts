/**
 * s3rver in a process of its own (see startS3rverProcess in s3rver.ts): started with fork, it
 * sends `{ endpoint, bucket, accessKeyId, secretAccessKey }` once it listens and stops when its
 * parent disconnects or sends SIGTERM.
 *
 * s3rver throws an ENOENT from its file streams as an uncaught exception when a client goes away
 * mid-request (a replica killed during its readiness probe's PUT): the object it was writing is
 * gone, nothing else is. Here that is logged and the server goes on; anything else ends it.
 */
import { startS3rver } from './s3rver.ts';

process.on('uncaughtException', (error: NodeJS.ErrnoException) => {
  if (error.code === 'ENOENT') {
    console.error(`s3rver: ${error.message} (a request whose client went away)`);
    return;
  }
  console.error(error);
  process.exit(1);
});

const s3 = await startS3rver();
const stop = () => void s3.stop().then(() => process.exit(0));
process.send?.({
  endpoint: s3.endpoint,
  bucket: s3.bucket,
  accessKeyId: s3.accessKeyId,
  secretAccessKey: s3.secretAccessKey,
});
process.once('SIGTERM', stop);
process.once('disconnect', stop);
