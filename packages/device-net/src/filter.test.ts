import { describe, expect, it } from 'vitest';
import { MAC_TABLE_ENTRIES, RxFilter } from './filter.js';
import { BROADCAST, ethernet, GUEST_MAC, PEER_MAC } from './test-support.js';

const OTHER = Uint8Array.of(0x02, 0, 0, 0, 0, 9);
const MULTI = Uint8Array.of(0x01, 0x00, 0x5e, 0, 0, 1);
const MULTI2 = Uint8Array.of(0x33, 0x33, 0, 0, 0, 1);
const to = (dst: Uint8Array, vlan?: number) =>
  ethernet(vlan === undefined ? { dst } : { dst, vlan });

function strict(): RxFilter {
  const filter = new RxFilter(GUEST_MAC);
  filter.promisc = false;
  return filter;
}

describe('RxFilter (§5.1.6.5.1 - §5.1.6.5.3)', () => {
  it('is promiscuous after reset: a driver without CTRL_RX gets everything', () => {
    const filter = new RxFilter(GUEST_MAC);
    expect(filter.accepts(to(OTHER))).toBe(true);
    expect(filter.accepts(to(MULTI))).toBe(true);
  });

  it('without promisc passes own unicast and broadcast only', () => {
    const filter = strict();
    expect(filter.accepts(to(GUEST_MAC))).toBe(true);
    expect(filter.accepts(to(BROADCAST))).toBe(true);
    expect(filter.accepts(to(OTHER))).toBe(false);
    expect(filter.accepts(to(MULTI))).toBe(false);
  });

  it('allmulti, alluni and the tables widen it', () => {
    const filter = strict();
    filter.allmulti = true;
    expect(filter.accepts(to(MULTI))).toBe(true);
    filter.allmulti = false;
    filter.setTables([OTHER], [MULTI2]);
    expect(filter.accepts(to(OTHER))).toBe(true);
    expect(filter.accepts(to(MULTI2))).toBe(true);
    expect(filter.accepts(to(MULTI))).toBe(false);
    expect(filter.accepts(to(PEER_MAC))).toBe(false);
    filter.alluni = true;
    expect(filter.accepts(to(PEER_MAC))).toBe(true);
  });

  it('nomulti, nouni and nobcast win over allmulti and alluni', () => {
    const filter = strict();
    filter.allmulti = true;
    filter.alluni = true;
    filter.nomulti = true;
    expect(filter.accepts(to(MULTI))).toBe(false);
    expect(filter.accepts(to(BROADCAST))).toBe(true); // nomulti does not apply to broadcast
    filter.nobcast = true;
    expect(filter.accepts(to(BROADCAST))).toBe(false);
    filter.nouni = true;
    expect(filter.accepts(to(GUEST_MAC))).toBe(false);
    filter.promisc = true;
    expect(filter.accepts(to(GUEST_MAC))).toBe(true);
  });

  it('overflowing a table accepts that whole class of addresses', () => {
    const filter = strict();
    const many = Array.from({ length: MAC_TABLE_ENTRIES + 1 }, (_, i) =>
      Uint8Array.of(0x02, 0, 0, 0, 1, i),
    );
    filter.setTables(many, []);
    expect(filter.accepts(to(PEER_MAC))).toBe(true);
    expect(filter.accepts(to(MULTI))).toBe(false);
    expect(filter.state().unicast).toBe(Number.POSITIVE_INFINITY);
  });

  it('filters tagged frames by VLAN once VLAN filtering is on', () => {
    const filter = strict();
    expect(filter.accepts(to(GUEST_MAC, 5))).toBe(true);
    filter.vlanFiltering = true;
    expect(filter.accepts(to(GUEST_MAC, 5))).toBe(false);
    expect(filter.accepts(to(GUEST_MAC))).toBe(true);
    filter.setVlan(5, true);
    expect(filter.accepts(to(GUEST_MAC, 5))).toBe(true);
    expect(filter.state().vlans).toEqual([5]);
    filter.setVlan(5, false);
    expect(filter.accepts(to(GUEST_MAC, 5))).toBe(false);
  });

  it('reset restores promiscuous mode and empties tables and VLANs', () => {
    const filter = strict();
    filter.setTables([OTHER], [MULTI]);
    filter.setVlan(7, true);
    filter.nobcast = true;
    filter.reset(PEER_MAC);
    expect(filter.state()).toEqual({
      promisc: true,
      allmulti: false,
      alluni: false,
      nomulti: false,
      nouni: false,
      nobcast: false,
      unicast: 0,
      multicast: 0,
      vlans: [],
    });
    filter.promisc = false;
    expect(filter.accepts(to(PEER_MAC))).toBe(true);
    expect(filter.accepts(to(GUEST_MAC))).toBe(false);
  });
});
