/** Block the calling thread for ms milliseconds (a lock's retry, EAGAIN on a pipe, the end of an interrupt). */
const cell = new Int32Array(new SharedArrayBuffer(4));

export function sleepMs(ms: number): void {
  Atomics.wait(cell, 0, 0, ms);
}
