// The driver half of two-agents.test.ts, run in a worker thread: a deliberately plain virtio
// driver (split §2.7 or packed §2.8) written straight against the ring layout, independent of
// core's own driver queues. It sends numbered requests in random bursts, kicks only when the
// device asks for kicks, sleeps on the interrupt line only after re-enabling interrupts and
// re-checking the used ring, and checks every completion. Any problem ends the run with a message
// in `result` (see the test for the control block layout).
import { parentPort, workerData } from 'node:worker_threads';

const { memory, control, layout, eventIdx, size, total, descAddr, driverAddr, deviceAddr, data } =
  workerData;

// Control block (Int32Array over its own SharedArrayBuffer).
const KICKS = 0;
const INTERRUPTS = 1;
const DONE = 2;
const SUPPRESSED_KICKS = 3;
const SLEEPS = 4;
const WAIT_MS = 2000;

const ctrl = new Int32Array(control);
const words = new Uint32Array(memory);
const NEXT = 1;
const WRITE = 2;
const AVAIL = 1 << 7;
const USED = 1 << 15;

let seed = 0x2545f491;
function random(n) {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) % n;
}

/** §2.7.10 / Linux vring_need_event. */
function needEvent(event, next, old) {
  return ((next - event - 1) & 0xffff) < ((next - old) & 0xffff);
}

/** Request `seq` reads 8 bytes at `request(seq)` and writes 8 bytes at `request(seq) + 16`. */
function request(seq) {
  return data + 32 * (seq % 256);
}
function expectedReply(seq) {
  return Math.imul(seq, 0x9e3779b1) >>> 0;
}

function fail(message) {
  throw new Error(message);
}

/** Split ring, 2-descriptor chains with heads 0, 2, 4… (§2.7). */
function splitRing() {
  const desc = new Uint32Array(memory, descAddr, 4 * size);
  const avail = new Uint16Array(memory, driverAddr, 3 + size);
  const used16 = new Uint16Array(memory, deviceAddr, 3 + 4 * size);
  const used32 = new Uint32Array(memory, deviceAddr, 1 + 2 * size);
  const usedEvent = 2 + size;
  const availEvent = 2 + 4 * size;
  const free = [];
  for (let head = size - 2; head >= 0; head -= 2) free.push(head);
  const seqOf = new Int32Array(size).fill(-1);
  let availIdx = 0;
  let lastUsed = 0;
  if (eventIdx)
    Atomics.store(avail, usedEvent, 0xffff); // interrupts off until we sleep
  else Atomics.store(avail, 0, 1);
  return {
    free: () => free.length,
    add(seq) {
      const head = free.pop();
      const at = request(seq);
      words[at >>> 2] = seq;
      words[(at >>> 2) + 1] = ~seq >>> 0;
      words[(at >>> 2) + 4] = 0;
      words[(at >>> 2) + 5] = 0;
      desc.set([at, 0, 8, NEXT | ((head + 1) << 16)], 4 * head);
      desc.set([at + 16, 0, 8, WRITE], 4 * (head + 1));
      avail[2 + (availIdx & (size - 1))] = head;
      availIdx = (availIdx + 1) & 0xffff;
      seqOf[head] = seq;
    },
    publish(added) {
      const old = (availIdx - added) & 0xffff;
      Atomics.store(avail, 1, availIdx); // release the entries and descriptors
      return eventIdx
        ? needEvent(Atomics.load(used16, availEvent), availIdx, old)
        : (Atomics.load(used16, 0) & 1) === 0;
    },
    take() {
      if (Atomics.load(used16, 1) === lastUsed) return -1; // acquire
      const slot = lastUsed & (size - 1);
      const head = used32[1 + 2 * slot];
      const len = used32[2 + 2 * slot];
      if (head >= size || seqOf[head] < 0) fail(`device returned head ${head}, not in flight`);
      if (len !== 8) fail(`device reported ${len} bytes for head ${head}`);
      const seq = seqOf[head];
      seqOf[head] = -1;
      free.push(head);
      lastUsed = (lastUsed + 1) & 0xffff;
      return seq;
    },
    /** Asks for an interrupt at the next used entry; true if one is already there. */
    enableInterrupts() {
      if (eventIdx) Atomics.store(avail, usedEvent, lastUsed);
      else Atomics.store(avail, 0, 0);
      return Atomics.load(used16, 1) !== lastUsed;
    },
    disableInterrupts() {
      if (eventIdx) Atomics.store(avail, usedEvent, (lastUsed - 1) & 0xffff);
      else Atomics.store(avail, 0, 1);
    },
  };
}

/** Packed ring, 2-slot chains, any ring size (§2.8). */
function packedRing() {
  const desc16 = new Uint16Array(memory, descAddr, 8 * size);
  const desc32 = new Uint32Array(memory, descAddr, 4 * size);
  const driverEvent = new Uint32Array(memory, driverAddr, 1);
  const deviceEvent = new Uint32Array(memory, deviceAddr, 1);
  const freeIds = [];
  for (let id = size - 1; id >= 0; id--) freeIds.push(id);
  const seqOf = new Int32Array(size).fill(-1);
  let freeSlots = size;
  let nextAvail = 0;
  let availWrap = 1;
  let nextUsed = 0;
  let usedWrap = 1;
  let heads = [];
  Atomics.store(driverEvent, 0, 1 << 16); // DISABLE until we sleep
  const write = (slot, addr, len, id, flags, head) => {
    desc32[4 * slot] = addr;
    desc32[4 * slot + 1] = 0;
    desc32[4 * slot + 2] = len;
    desc16[8 * slot + 6] = id;
    const marked = flags | (availWrap ? AVAIL : USED);
    if (head) heads.push(8 * slot + 7, marked);
    else desc16[8 * slot + 7] = marked;
    if (++nextAvail === size) {
      nextAvail = 0;
      availWrap ^= 1;
    }
  };
  return {
    free: () => Math.min(freeIds.length, Math.floor(freeSlots / 2)),
    add(seq) {
      const id = freeIds.pop();
      const at = request(seq);
      words[at >>> 2] = seq;
      words[(at >>> 2) + 1] = ~seq >>> 0;
      words[(at >>> 2) + 4] = 0;
      words[(at >>> 2) + 5] = 0;
      write(nextAvail, at, 8, id, NEXT, true);
      write(nextAvail, at + 16, 8, id, WRITE, false);
      freeSlots -= 2;
      seqOf[id] = seq;
    },
    publish(added) {
      // Heads last to first; the first with a release store makes the whole batch visible.
      for (let i = heads.length - 2; i > 0; i -= 2) desc16[heads[i]] = heads[i + 1];
      Atomics.store(desc16, heads[0], heads[1]);
      heads = [];
      const event = Atomics.load(deviceEvent, 0);
      const mode = (event >>> 16) & 3;
      if (mode === 1) return false;
      if (mode !== 2 || !eventIdx) return true;
      const travelled = 2 * added;
      if (travelled >= size) return true;
      let offset = event & 0x7fff;
      if (((event >>> 15) & 1) !== availWrap) offset -= size;
      return needEvent(offset, nextAvail, nextAvail - travelled);
    },
    take() {
      const flags = Atomics.load(desc16, 8 * nextUsed + 7); // acquire
      const used = flags >>> 15;
      if (used !== ((flags >>> 7) & 1) || used !== usedWrap) return -1;
      const id = desc16[8 * nextUsed + 6];
      const len = flags & WRITE ? desc32[4 * nextUsed + 2] : 0;
      if (id >= size || seqOf[id] < 0) fail(`device returned buffer id ${id}, not in flight`);
      if (len !== 8) fail(`device reported ${len} bytes for buffer id ${id}`);
      const seq = seqOf[id];
      seqOf[id] = -1;
      freeIds.push(id);
      freeSlots += 2;
      nextUsed += 2;
      if (nextUsed >= size) {
        nextUsed -= size;
        usedWrap ^= 1;
      }
      return seq;
    },
    enableInterrupts() {
      Atomics.store(driverEvent, 0, eventIdx ? (2 << 16) | nextUsed | (usedWrap << 15) : 0);
      const flags = Atomics.load(desc16, 8 * nextUsed + 7);
      const used = flags >>> 15;
      return used === ((flags >>> 7) & 1) && used === usedWrap;
    },
    disableInterrupts() {
      Atomics.store(driverEvent, 0, 1 << 16);
    },
  };
}

function run() {
  const ring = layout === 'split' ? splitRing() : packedRing();
  let sent = 0;
  let completed = 0;
  const collect = () => {
    let taken = 0;
    for (let seq = ring.take(); seq >= 0; seq = ring.take()) {
      if (seq !== completed) fail(`completion of request ${seq} arrived, expected ${completed}`);
      const at = request(seq);
      const reply = words[(at >>> 2) + 4];
      if (reply !== expectedReply(seq) || words[(at >>> 2) + 5] !== ~reply >>> 0) {
        fail(`reply to request ${seq} is torn or wrong: ${reply}, ${words[(at >>> 2) + 5]}`);
      }
      completed++;
      taken++;
    }
    return taken;
  };
  while (completed < total) {
    const room = Math.min(ring.free(), total - sent);
    if (room > 0) {
      const burst = 1 + random(room);
      for (let i = 0; i < burst; i++) ring.add(sent++);
      if (ring.publish(burst)) {
        Atomics.add(ctrl, KICKS, 1);
        Atomics.notify(ctrl, KICKS);
      } else {
        Atomics.add(ctrl, SUPPRESSED_KICKS, 1);
      }
    }
    if (collect() > 0) continue;
    // Nothing came back: sleep only when there is nothing else to do, or now and then anyway,
    // and poll a little first with interrupts still off (so the device has to suppress some).
    if (ring.free() > 0 && sent < total && random(4) !== 0) continue;
    let polled = 0;
    for (let spin = random(256); spin > 0 && polled === 0; spin--) polled = collect();
    if (polled > 0) continue;
    for (;;) {
      const interrupts = Atomics.load(ctrl, INTERRUPTS);
      if (ring.enableInterrupts()) break; // re-check: used buffers arrived while disabled
      Atomics.add(ctrl, SLEEPS, 1);
      if (Atomics.wait(ctrl, INTERRUPTS, interrupts, WAIT_MS) === 'timed-out') {
        fail(
          `no interrupt within ${WAIT_MS} ms with ${sent - completed} requests in flight` +
            (ring.enableInterrupts() ? ' although used buffers were there (lost interrupt)' : ''),
        );
      }
    }
    ring.disableInterrupts();
    collect();
  }
}

let result = 'ok';
try {
  run();
} catch (error) {
  result = error instanceof Error ? error.message : String(error);
}
Atomics.store(ctrl, DONE, 1);
Atomics.add(ctrl, KICKS, 1);
Atomics.notify(ctrl, KICKS);
// The device thread may be blocked in Atomics.wait; it reads this message once it returns.
parentPort?.postMessage(result);
