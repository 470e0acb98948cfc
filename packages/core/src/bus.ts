/**
 * The interface between a VMM's address spaces (MMIO, port I/O, PCI config) and the things
 * mapped into them, transports above all. Accesses carry their bytes little-endian, as a KVM
 * exit or a CPU emulator sees them, so one shape serves every width.
 */

/** Something mapped at a range of an address space. Offsets are relative to its base. */
export interface BusDevice {
  /** Guest read of `data.length` bytes at `offset`: fill `data`. Must not throw for guest input. */
  read(offset: number, data: Uint8Array): void;
  /** Guest write of `data` at `offset`. Must not throw for guest input. */
  write(offset: number, data: Uint8Array): void;
}

/** Reads an access's bytes as an unsigned little-endian integer (widths 1, 2, 4; 8 gives a safe number or NaN). */
export function accessValue(data: Uint8Array): number {
  switch (data.length) {
    case 1:
      return data[0]!;
    case 2:
      return data[0]! | (data[1]! << 8);
    case 4:
      return (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0;
    default: {
      let value = 0;
      for (let i = data.length - 1; i >= 0; i--) value = value * 256 + data[i]!;
      return Number.isSafeInteger(value) ? value : Number.NaN;
    }
  }
}

/** Stores `value` little-endian into an access's bytes (as many as `data` holds). */
export function setAccessValue(data: Uint8Array, value: number): void {
  // Widths up to 4 take the value modulo 2^32 (so -1 stores all ones); wider ones need it unsigned.
  let rest = data.length <= 4 ? value >>> 0 : value;
  for (let i = 0; i < data.length; i++) {
    data[i] = rest % 256;
    rest = Math.floor(rest / 256);
  }
}
