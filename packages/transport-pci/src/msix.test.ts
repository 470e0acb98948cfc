import { describe, expect, it } from 'vitest';
import { MsixTable } from './msix.js';

function u32(value: number): Uint8Array {
  const data = new Uint8Array(4);
  new DataView(data.buffer).setUint32(0, value >>> 0, true);
  return data;
}

function readU32(table: MsixTable, offset: number): number {
  const data = new Uint8Array(4);
  table.readTable(offset, data);
  return new DataView(data.buffer).getUint32(0, true);
}

function setup(vectors = 3) {
  const reports: string[] = [];
  const delivered: [bigint, number, number][] = [];
  const table = new MsixTable(vectors, (message) => reports.push(message));
  table.connect({ signal: (address, data, vector) => delivered.push([address, data, vector]) });
  const program = (vector: number, address: bigint, data: number, masked: boolean) => {
    table.writeTable(vector * 16, u32(Number(address & 0xffff_ffffn)));
    table.writeTable(vector * 16 + 4, u32(Number(address >> 32n)));
    table.writeTable(vector * 16 + 8, u32(data));
    table.writeTable(vector * 16 + 12, u32(masked ? 1 : 0));
  };
  return { table, reports, delivered, program };
}

describe('MsixTable', () => {
  it('starts disabled with every vector masked', () => {
    const { table } = setup();
    expect(table.enabled).toBe(false);
    for (let vector = 0; vector < 3; vector++) {
      expect(readU32(table, vector * 16 + 12)).toBe(1);
      expect(table.route(vector)).toEqual({ vector, address: 0n, data: 0, masked: true });
    }
  });

  it('delivers an unmasked vector at once, and drops signals while disabled', () => {
    const { table, delivered, program } = setup();
    program(1, 0xfee0_1000n, 0x4041, false);
    expect(table.signal(1)).toBe(false);
    expect(delivered).toEqual([]);
    table.setControl(true, false);
    expect(table.signal(1)).toBe(true);
    expect(delivered).toEqual([[0xfee0_1000n, 0x4041, 1]]);
    expect(table.signal(3)).toBe(false);
  });

  it('sets the pending bit while a vector is masked and delivers it on unmask', () => {
    const { table, delivered, program } = setup();
    table.setControl(true, false);
    program(2, 0x1_2800_0000n, 7, true);
    table.signal(2);
    table.signal(2);
    expect(delivered).toEqual([]);
    expect(table.isPending(2)).toBe(true);
    const pba = new Uint8Array(8);
    table.readPba(0, pba);
    expect(pba[0]).toBe(0b100);
    table.writeTable(2 * 16 + 12, u32(0));
    // Two signals while masked collapse into one pending message.
    expect(delivered).toEqual([[0x1_2800_0000n, 7, 2]]);
    expect(table.isPending(2)).toBe(false);
    table.readPba(0, pba);
    expect(pba[0]).toBe(0);
  });

  it('keeps pending bits when the guest writes the PBA', () => {
    const { table, reports, program } = setup();
    table.setControl(true, false);
    program(1, 0xfee0_0000n, 0x31, true);
    table.signal(1);
    table.writePba(0, new Uint8Array(8));
    expect(table.isPending(1)).toBe(true);
    const pba = new Uint8Array(8);
    table.readPba(0, pba);
    expect(pba[0]).toBe(0b10);
    expect(reports).toHaveLength(1);
  });

  it('holds every vector while the function is masked', () => {
    const { table, delivered, program } = setup();
    program(0, 0xfee0_0000n, 0x30, false);
    program(1, 0xfee0_0000n, 0x31, false);
    table.setControl(true, true);
    table.signal(0);
    table.signal(1);
    expect(delivered).toEqual([]);
    table.setControl(true, false);
    expect(delivered.map(([, data]) => data)).toEqual([0x30, 0x31]);
  });

  it('keeps only the mask bit of vector control and reports changes', () => {
    const { table } = setup();
    const changes: (number | undefined)[] = [];
    table.events.on('change', (vector) => changes.push(vector));
    table.writeTable(12, u32(0xffff_fffe));
    expect(readU32(table, 12)).toBe(0);
    table.writeTable(8, u32(0x55));
    table.writeTable(8, u32(0x55)); // same value: no change
    table.setControl(true, false);
    expect(changes).toEqual([0, 0, undefined]);
  });

  it('takes aligned 64-bit accesses', () => {
    const { table } = setup();
    const data = new Uint8Array(8);
    new DataView(data.buffer).setBigUint64(0, 0x0000_0001_fee0_0000n, true);
    table.writeTable(16, data);
    expect(table.route(1)?.address).toBe(0x1_fee0_0000n);
    const back = new Uint8Array(8);
    table.readTable(24, back);
    expect(new DataView(back.buffer).getBigUint64(0, true)).toBe(1n << 32n); // data 0, masked
  });

  it('ignores and reports accesses beyond the table, misaligned or of odd widths', () => {
    const { table, reports } = setup(2);
    const data = new Uint8Array(4).fill(0xaa);
    table.readTable(32, data); // first byte past a 2-vector table
    expect([...data]).toEqual([0, 0, 0, 0]);
    table.writeTable(32, u32(1));
    table.writeTable(2, u32(1)); // misaligned
    table.writeTable(0, new Uint8Array([1, 2])); // 16-bit
    table.readPba(8, new Uint8Array(4)); // PBA of 2 vectors is 8 bytes
    table.writePba(0, u32(0xffff_ffff));
    expect(reports).toHaveLength(6);
    expect(table.route(0)).toEqual({ vector: 0, address: 0n, data: 0, masked: true });
  });

  it('refuses impossible table sizes', () => {
    expect(() => new MsixTable(0)).toThrow(/table size/);
    expect(() => new MsixTable(2049)).toThrow(/table size/);
  });
});
