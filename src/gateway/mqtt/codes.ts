/**
 * The numbers of the MQTT wire that every part of the gateway names: packet types, reason codes, and the
 * states of a connection. Spec references are to MQTT 5.0 unless marked v3.1.1.
 */

/** Control packet types, the high nibble of the first byte (§2.1.2, table 2-1; v3.1.1 §2.2.1). */
export const PacketType = {
  connect: 1,
  connack: 2,
  publish: 3,
  puback: 4,
  pubrec: 5,
  pubrel: 6,
  pubcomp: 7,
  subscribe: 8,
  suback: 9,
  unsubscribe: 10,
  unsuback: 11,
  pingreq: 12,
  pingresp: 13,
  disconnect: 14,
  /** v5 only */
  auth: 15,
} as const
export type PacketType = (typeof PacketType)[keyof typeof PacketType]

/** The v5 reason codes the gateway sends or checks (§2.4, table 2-6). */
export const ReasonCode = {
  success: 0x00,
  /** DISCONNECT from the client: keep the will and publish it (§3.14.2.1) */
  disconnectWithWill: 0x04,
  noSubscriptionExisted: 0x11,
  unspecifiedError: 0x80,
  malformedPacket: 0x81,
  protocolError: 0x82,
  unsupportedProtocolVersion: 0x84,
  clientIdentifierNotValid: 0x85,
  badUsernameOrPassword: 0x86,
  notAuthorized: 0x87,
  serverBusy: 0x89,
  serverShuttingDown: 0x8b,
  badAuthenticationMethod: 0x8c,
  keepAliveTimeout: 0x8d,
  sessionTakenOver: 0x8e,
  topicNameInvalid: 0x90,
  packetIdentifierNotFound: 0x92,
  receiveMaximumExceeded: 0x93,
  topicAliasInvalid: 0x94,
  packetTooLarge: 0x95,
  quotaExceeded: 0x97,
  payloadFormatInvalid: 0x99,
  retainNotSupported: 0x9a,
} as const
export type ReasonCode = (typeof ReasonCode)[keyof typeof ReasonCode]

/**
 * The v3.1.1 CONNACK return code that says what a v5 CONNACK reason code says (v3.1.1 §3.2.2.3, table 3.1).
 * A refusal with none of them closes a v3.1.1 connection without a CONNACK (v3.1.1: MQTT-3.2.2-6).
 */
export const CONNACK_V3 = new Map<number, number>([
  [ReasonCode.success, 0],
  [ReasonCode.unsupportedProtocolVersion, 1],
  [ReasonCode.clientIdentifierNotValid, 2],
  [ReasonCode.badUsernameOrPassword, 4],
  [ReasonCode.notAuthorized, 5],
  [ReasonCode.badAuthenticationMethod, 5],
])

/** v3.1.1 SUBACK return code for a refused subscription (v3.1.1 §3.9.3). */
export const SUBACK_FAILURE_V3 = 0x80

/**
 * Where a connection stands. `auth`: the CONNECT was read and is being authenticated; what the client sent
 * after it waits unread, as none of it may be processed if the CONNECT is refused [MQTT-3.1.4-6] (v3.1.1:
 * MQTT-3.1.4-5).
 */
export const ConnState = { new: 0, auth: 1, connected: 2, closed: 3 } as const
export type ConnState = (typeof ConnState)[keyof typeof ConnState]
