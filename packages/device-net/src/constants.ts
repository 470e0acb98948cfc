/**
 * virtio-net constants, transcribed from the OASIS "Virtual I/O Device (VIRTIO) Version 1.2" spec,
 * §5.1 (Network Device). Each group names the section it comes from. Feature constants are bit
 * numbers; turn one into a mask with `featureBit` from @virtkit/core.
 */

/** Network device feature bits, §5.1.3. */
export const NetFeature = {
  /** Device handles packets with partial checksum (guest TX checksum offload). */
  CSUM: 0,
  /** Driver handles packets with partial checksum (guest RX). */
  GUEST_CSUM: 1,
  /** Control channel offloads reconfiguration (§5.1.6.5.6.1). */
  CTRL_GUEST_OFFLOADS: 2,
  /** `mtu` in the configuration space is valid. */
  MTU: 3,
  /** `mac` in the configuration space is valid. */
  MAC: 5,
  /** Driver can receive TSOv4. */
  GUEST_TSO4: 7,
  /** Driver can receive TSOv6. */
  GUEST_TSO6: 8,
  /** Driver can receive TSO with ECN. */
  GUEST_ECN: 9,
  /** Driver can receive UFO. */
  GUEST_UFO: 10,
  /** Device can receive TSOv4 (guest TX segmentation offload). */
  HOST_TSO4: 11,
  /** Device can receive TSOv6. */
  HOST_TSO6: 12,
  /** Device can receive TSO with ECN. */
  HOST_ECN: 13,
  /** Device can receive UFO. */
  HOST_UFO: 14,
  /** Driver can merge receive buffers (`num_buffers`). */
  MRG_RXBUF: 15,
  /** `status` in the configuration space is valid. */
  STATUS: 16,
  /** Control virtqueue. */
  CTRL_VQ: 17,
  /** Control channel RX mode and MAC filter support. */
  CTRL_RX: 18,
  /** Control channel VLAN filtering. */
  CTRL_VLAN: 19,
  /** Extra RX modes: all-unicast, no-multicast, no-unicast, no-broadcast. */
  CTRL_RX_EXTRA: 20,
  /** Driver can send gratuitous packets when asked (VIRTIO_NET_S_ANNOUNCE). */
  GUEST_ANNOUNCE: 21,
  /** Multiqueue with automatic receive steering. */
  MQ: 22,
  /** Set the MAC address through the control channel. */
  CTRL_MAC_ADDR: 23,
  /** Device can receive USO packets. */
  HOST_USO: 56,
  /** Per-packet hash reporting. */
  HASH_REPORT: 57,
  /** Driver provides the exact `hdr_len`. */
  GUEST_HDRLEN: 59,
  /** Receive-side scaling. */
  RSS: 60,
  /** Extended receive segment coalescing information. */
  RSC_EXT: 61,
  /** Standby for a primary device with the same MAC. */
  STANDBY: 62,
  /** `speed` and `duplex` in the configuration space are valid. */
  SPEED_DUPLEX: 63,
} as const;

/**
 * Feature dependencies, §5.1.3.1: each entry says that `feature` requires at least one of
 * `requires`. (CTRL_RX_EXTRA needing CTRL_RX and CTRL_GUEST_OFFLOADS needing CTRL_VQ follow from
 * the commands they add, which travel on the control queue.)
 */
export const NET_FEATURE_REQUIREMENTS: readonly {
  readonly feature: number;
  readonly requires: readonly number[];
}[] = [
  { feature: NetFeature.GUEST_TSO4, requires: [NetFeature.GUEST_CSUM] },
  { feature: NetFeature.GUEST_TSO6, requires: [NetFeature.GUEST_CSUM] },
  { feature: NetFeature.GUEST_ECN, requires: [NetFeature.GUEST_TSO4, NetFeature.GUEST_TSO6] },
  { feature: NetFeature.GUEST_UFO, requires: [NetFeature.GUEST_CSUM] },
  { feature: NetFeature.HOST_TSO4, requires: [NetFeature.CSUM] },
  { feature: NetFeature.HOST_TSO6, requires: [NetFeature.CSUM] },
  { feature: NetFeature.HOST_ECN, requires: [NetFeature.HOST_TSO4, NetFeature.HOST_TSO6] },
  { feature: NetFeature.HOST_UFO, requires: [NetFeature.CSUM] },
  { feature: NetFeature.HOST_USO, requires: [NetFeature.CSUM] },
  { feature: NetFeature.CTRL_RX, requires: [NetFeature.CTRL_VQ] },
  { feature: NetFeature.CTRL_VLAN, requires: [NetFeature.CTRL_VQ] },
  { feature: NetFeature.GUEST_ANNOUNCE, requires: [NetFeature.CTRL_VQ] },
  { feature: NetFeature.MQ, requires: [NetFeature.CTRL_VQ] },
  { feature: NetFeature.CTRL_MAC_ADDR, requires: [NetFeature.CTRL_VQ] },
  { feature: NetFeature.RSC_EXT, requires: [NetFeature.HOST_TSO4, NetFeature.HOST_TSO6] },
  { feature: NetFeature.RSS, requires: [NetFeature.CTRL_VQ] },
  { feature: NetFeature.CTRL_RX_EXTRA, requires: [NetFeature.CTRL_RX] },
  { feature: NetFeature.CTRL_GUEST_OFFLOADS, requires: [NetFeature.CTRL_VQ] },
];

/** Names of the feature bits, for messages. */
export const NET_FEATURE_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(NetFeature).map(([name, bit]) => [bit, `VIRTIO_NET_F_${name}`]),
);

/** Configuration space layout (`struct virtio_net_config`), §5.1.4: byte offsets. */
export const NetConfig = {
  MAC: 0,
  STATUS: 6,
  MAX_VIRTQUEUE_PAIRS: 8,
  MTU: 10,
  SPEED: 12,
  DUPLEX: 16,
  RSS_MAX_KEY_SIZE: 17,
  RSS_MAX_INDIRECTION_TABLE_LENGTH: 18,
  SUPPORTED_HASH_TYPES: 20,
  /** Size of the whole structure. */
  SIZE: 24,
} as const;

/** `status` bits, §5.1.4. */
export const NET_S_LINK_UP = 1;
export const NET_S_ANNOUNCE = 2;

/** `speed` and `duplex` values meaning "unknown", §5.1.4. */
export const NET_SPEED_UNKNOWN = 0xffff_ffff;
export const NET_DUPLEX_UNKNOWN = 0xff;

/** `max_virtqueue_pairs` bounds, §5.1.4.1 and §5.1.6.5.5. */
export const NET_CTRL_MQ_VQ_PAIRS_MIN = 1;
export const NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000;

/** `mtu` bounds the device must respect, §5.1.4.1. */
export const NET_MTU_MIN = 68;
export const NET_MTU_MAX = 65535;

/** `struct virtio_net_hdr` flags, §5.1.6. */
export const NET_HDR_F_NEEDS_CSUM = 1;
export const NET_HDR_F_DATA_VALID = 2;
export const NET_HDR_F_RSC_INFO = 4;

/** `struct virtio_net_hdr` gso_type values, §5.1.6. */
export const NET_HDR_GSO_NONE = 0;
export const NET_HDR_GSO_TCPV4 = 1;
export const NET_HDR_GSO_UDP = 3;
export const NET_HDR_GSO_TCPV6 = 4;
export const NET_HDR_GSO_UDP_L4 = 5;
export const NET_HDR_GSO_ECN = 0x80;

/**
 * Size of `struct virtio_net_hdr`, §5.1.6: 12 bytes with `num_buffers` (always with VERSION_1,
 * or with MRG_RXBUF), 10 for a legacy driver without MRG_RXBUF (§5.1.6.1).
 */
export const NET_HDR_SIZE = 12;
export const NET_HDR_SIZE_LEGACY = 10;

/** Byte offsets inside `struct virtio_net_hdr`. */
export const NetHeaderField = {
  FLAGS: 0,
  GSO_TYPE: 1,
  HDR_LEN: 2,
  GSO_SIZE: 4,
  CSUM_START: 6,
  CSUM_OFFSET: 8,
  NUM_BUFFERS: 10,
} as const;

/** Control virtqueue, §5.1.6.5: ack values. */
export const NET_OK = 0;
export const NET_ERR = 1;

/** Control command classes and commands, §5.1.6.5.1 - §5.1.6.5.6. */
export const NetCtrl = {
  RX: 0,
  RX_PROMISC: 0,
  RX_ALLMULTI: 1,
  RX_ALLUNI: 2,
  RX_NOMULTI: 3,
  RX_NOUNI: 4,
  RX_NOBCAST: 5,

  MAC: 1,
  MAC_TABLE_SET: 0,
  MAC_ADDR_SET: 1,

  VLAN: 2,
  VLAN_ADD: 0,
  VLAN_DEL: 1,

  ANNOUNCE: 3,
  ANNOUNCE_ACK: 0,

  MQ: 4,
  MQ_VQ_PAIRS_SET: 0,
  MQ_RSS_CONFIG: 1,
  MQ_HASH_CONFIG: 2,

  GUEST_OFFLOADS: 5,
  GUEST_OFFLOADS_SET: 0,
} as const;

/** Ethernet framing (IEEE 802.3): header, 802.1Q tag, address length, ethertypes. */
export const ETH_ALEN = 6;
export const ETH_HLEN = 14;
export const VLAN_HLEN = 4;
export const ETH_P_IPV4 = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
/** VLAN IDs are 12 bits (802.1Q). */
export const VLAN_ID_COUNT = 4096;

/**
 * Largest frame the device moves, without the virtio header: a 65535-byte IP packet behind an
 * Ethernet header and one VLAN tag. §5.1.6.3 quotes 65550 (no tag) for GSO buffers.
 */
export const MAX_FRAME_SIZE = 65535 + ETH_HLEN + VLAN_HLEN;

/** Frames below this are not Ethernet frames (no room for the header); they are dropped. */
export const MIN_FRAME_SIZE = ETH_HLEN;
