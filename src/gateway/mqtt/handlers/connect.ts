import { randomBytes } from 'node:crypto'
import mqtt, { type IConnectPacket } from 'mqtt-packet'
import { CONNACK_V3, ConnState, ReasonCode } from '../codes.js'
import type { Connection } from '../connection.js'
import { connectLimits } from '../downlink.js'
import { OPERATOR_USERNAME } from '../operators.js'
import { NEVER_EXPIRES } from '../sessions.js'
import { classifyPublish, devicePrefix } from '../topics.js'

/**
 * CONNECT, already checked on its bytes (validate-connect.ts): username = device id, password = device token,
 * or over MQTTS a client certificate whose CN is the device id; or username `$admin`, password = the admin
 * token, for an operator (operators.ts). Authentication is asynchronous; until it ends, nothing the client
 * sent after the CONNECT is read.
 */
export function handleConnect(c: Connection, p: IConnectPacket): void {
  c.version = p.protocolVersion ?? 4
  c.state = ConnState.auth
  const props = p.properties
  if (c.version === 5 && props?.authenticationMethod !== undefined) {
    // [MQTT-4.12.0-1] an authentication method we do not support: 0x8C, then close.
    const why = 'enhanced authentication is not supported'
    return refuseConnect(c, ReasonCode.badAuthenticationMethod, why)
  }
  if (c.version === 5 && props?.authenticationData !== undefined) {
    // §3.1.2.11.10: Authentication Data without an Authentication Method is a Protocol Error.
    return refuseConnect(c, ReasonCode.protocolError, 'authentication data without a method')
  }
  if (p.username === OPERATOR_USERNAME) return operatorLogin(c, p)
  const cert = c.certificate
  if (cert !== null) {
    // Over MQTTS with IOTCORE_TLS_CA, a client certificate names its device by its subject's CN, as Mosquitto's
    // use_identity_as_username does; the CONNECT may repeat the id as username or leave it empty, and may
    // still send the device's token, which is then checked too.
    if ('untrusted' in cert)
      return refuseCertificate(c, `the client certificate is not trusted: ${cert.untrusted}`)
    if (p.username && p.username !== cert.cn)
      return refuseCertificate(
        c,
        `the client certificate is device ${cert.cn}'s; the username must be that id or empty`,
      )
    if (p.password === undefined) return byCertificate(c, p, cert.cn)
  }
  const deviceId = cert !== null ? cert.cn : p.username
  if (deviceId === undefined || p.password === undefined) {
    const why = 'username (device id) and password (device token) are required'
    return refuseConnect(c, ReasonCode.badUsernameOrPassword, why)
  }
  c.pause()
  c.gw.credentials
    .authenticate(deviceId, p.password.toString('utf8'))
    .then(
      (cred) => authenticated(c, p, deviceId, cred?.tokenHash),
      () => authenticated(c, p, deviceId, undefined),
    )
    .catch((err) => c.fail(err))
}

function refuseCertificate(c: Connection, why: string): void {
  c.gw.log.info({ transport: c.transport, why }, 'MQTT connect refused: client certificate')
  refuseConnect(c, ReasonCode.notAuthorized, why)
}

/** The certificate is trusted and names `deviceId`: the device must exist (and not be retired). */
function byCertificate(c: Connection, p: IConnectPacket, deviceId: string): void {
  c.pause()
  const cached = c.gw.credentials.current(deviceId)
  // A device created a moment ago may not have reached the cache yet: ask the database once, as for tokens.
  const found = cached ? Promise.resolve(cached) : c.gw.credentials.refresh(deviceId).catch(() => undefined)
  found
    .then((cred) => {
      if (c.state !== ConnState.auth) return
      if (cred === undefined)
        return refuseCertificate(c, `the client certificate names device ${deviceId}, which does not exist`)
      c.byCertificate = true
      authenticated(c, p, deviceId, cred.tokenHash)
    })
    .catch((err) => c.fail(err))
}

function authenticated(c: Connection, p: IConnectPacket, deviceId: string, tokenHash?: string): void {
  if (c.state !== ConnState.auth) return
  const v5 = c.version === 5
  if (tokenHash === undefined) {
    c.gw.log.info({ deviceId, transport: c.transport }, 'MQTT connect refused: bad device id or token')
    const why = 'bad device id or token'
    return refuseConnect(c, ReasonCode.badUsernameOrPassword, why)
  }
  c.deviceId = deviceId
  c.tokenHash = tokenHash
  c.telemetryTopic = `${devicePrefix(deviceId)}telemetry`
  c.telemetryTopicBytes = Buffer.from(c.telemetryTopic)
  if (p.will) {
    if (classifyPublish(deviceId, p.will.topic) !== 'telemetry') {
      const why = `will topic must be ${c.telemetryTopic}`
      return refuseConnect(c, ReasonCode.notAuthorized, why)
    }
    // [MQTT-3.2.2-13] with Retain Available 0, a will with retain set is refused with 0x9A.
    if (v5 && p.will.retain) return refuseConnect(c, ReasonCode.retainNotSupported, 'retain is not supported')
    c.will = p.will
  }
  const properties = connackProperties(c, p, deviceId)
  const sessions = c.gw.sessions
  const cleanStart = p.clean !== false
  c.sessionExpiry = v5 ? (p.properties?.sessionExpiryInterval ?? 0) : cleanStart ? 0 : NEVER_EXPIRES
  if (!sessions || (cleanStart && c.sessionExpiry === 0)) {
    // [MQTT-3.1.2-4] (v3.1.1: MQTT-3.1.2-6) a clean start discards any session kept under this client id.
    if (sessions) sessions.discard(c.clientId!).catch(() => {})
    return accept(c, properties, undefined, cleanStart)
  }
  const key = c.clientId!
  const load = cleanStart ? sessions.discard(key).then(() => undefined) : sessions.load(key)
  load
    .then(
      (subs) => accept(c, properties, subs, cleanStart),
      (err) => {
        // Without the database a session cannot be resumed: say so with Session Present 0.
        c.gw.log.warn({ deviceId, err: (err as Error).message }, 'MQTT session not loaded')
        accept(c, properties, undefined, cleanStart)
      },
    )
    .catch((err) => c.fail(err))
}

/**
 * An operator: the admin token, compared in constant time. It gets the alert events it subscribes to and may
 * do nothing else (operators.ts): no will, as it may not publish, and no session kept, as events are not
 * queued for it while it is away (v5: Session Expiry Interval 0 in the CONNACK, §3.2.2.3.2; a v3.1.1 client
 * asking for a persistent session is answered Session Present 0, and nothing is kept when it leaves).
 */
function operatorLogin(c: Connection, p: IConnectPacket): void {
  const operators = c.gw.operators
  if (operators === undefined)
    return refuseConnect(c, ReasonCode.notAuthorized, 'this gateway takes no operator connections')
  if (!operators.passwordMatches(p.password)) {
    c.gw.log.info({ transport: c.transport }, 'MQTT connect refused: bad operator password')
    return refuseConnect(c, ReasonCode.badUsernameOrPassword, 'bad username or password')
  }
  if (p.will) return refuseConnect(c, ReasonCode.notAuthorized, 'an operator connection may not have a will')
  operators.attach(c, p.properties?.receiveMaximum, p.properties?.maximumPacketSize)
  const properties = connackProperties(c, p, OPERATOR_USERNAME)
  if (c.version === 5 && (p.properties?.sessionExpiryInterval ?? 0) > 0) properties.sessionExpiryInterval = 0
  accept(c, properties, undefined, true)
}

/**
 * The Keep Alive, the client id (`<owner>/<client id>`) and, for v5, the CONNACK properties, of a device's or an
 * operator's connection.
 */
function connackProperties(c: Connection, p: IConnectPacket, owner: string): Record<string, unknown> {
  keepAlive(c, p.keepalive ?? 0)
  const properties: Record<string, unknown> = {}
  if (c.version === 5) {
    // [MQTT-3.2.2-21] if the server sends Server Keep Alive, the client must use it.
    if (c.keepalive !== (p.keepalive ?? 0)) properties.serverKeepAlive = c.keepalive
    properties.receiveMaximum = c.gw.opts.receiveMaximum
    properties.maximumPacketSize = c.gw.maxPacketSize
    properties.retainAvailable = false
    properties.sharedSubscriptionAvailable = false
    // A command sent for a subscription would carry its Subscription Identifier [MQTT-3.3.4-3]; sessions keep
    // only filters and QoS, so identifiers are announced unavailable (§3.2.2.3.12).
    properties.subscriptionIdentifiersAvailable = false
    properties.topicAliasMaximum = 0
    // What the gateway may send a device: its Receive Maximum and Maximum Packet Size (downlink.ts).
    if (c.operator === null) c.downlink = connectLimits(c.version, p.properties)
    if (p.clientId === '') {
      // [MQTT-3.2.2-16] an empty client id gets one assigned.
      p.clientId = `${owner}-${randomBytes(4).toString('hex')}`
      properties.assignedClientIdentifier = p.clientId
    }
  }
  c.clientId = `${owner}/${p.clientId}`
  return properties
}

/**
 * The Keep Alive in force and the silence allowed. v5: the client's, at most our maximum, which replaces a
 * larger one or 0 through Server Keep Alive [MQTT-3.2.2-21]; cut after one and a half times it
 * [MQTT-3.1.2-22]. v3.1.1 cannot be told another value, so the client's own is honoured, 0 included (v3.1.1
 * §3.1.2.10: 0 turns the keep alive mechanism off), up to the idle limit: past it a server may close a silent
 * connection "at any time, regardless of the Keep Alive value" (ibid.), and we do, as it is most likely dead.
 */
function keepAlive(c: Connection, asked: number): void {
  const { maxKeepaliveSeconds: max, idleLimitSeconds: idle } = c.gw.opts
  if (c.version === 5) {
    c.keepalive = asked === 0 || asked > max ? max : asked
    c.maxSilenceMs = c.keepalive * 1500
  } else {
    c.keepalive = asked
    c.maxSilenceMs = asked === 0 ? idle * 1000 : Math.min(asked * 1500, idle * 1000)
  }
}

/** Why the sweep cut a connection that stayed silent past `maxSilenceMs`: logged, and told a v5 client. */
export function silenceWhy(c: Connection): string {
  const idle = c.gw.opts.idleLimitSeconds
  if (c.version === 5 || (c.keepalive > 0 && c.keepalive * 1500 <= idle * 1000))
    return `no packet within 1.5 times the keep alive of ${c.keepalive} s`
  const limit = `the idle limit of ${idle} s (IOTCORE_MQTT_IDLE_LIMIT)`
  return c.keepalive === 0
    ? `no packet within ${limit}, which bounds an MQTT 3.1.1 client with keepalive 0`
    : `no packet within ${limit}, shorter than 1.5 times its keepalive of ${c.keepalive} s`
}

function accept(
  c: Connection,
  properties: Record<string, unknown>,
  restored: Map<string, number> | undefined,
  cleanStart: boolean,
): void {
  if (c.state !== ConnState.auth) return
  // Revoked while the session loaded (a rotation or a delete whose cut went by before this was connected).
  if (c.operator === null && !c.gw.authorized(c))
    return refuseConnect(c, ReasonCode.badUsernameOrPassword, 'bad device id or token')
  if (restored) c.subs = restored
  c.saveSession()
  c.gw.register(c)
  // After register: a connection this one took the session over from has parked its resend window by then.
  // A clean start begins a new session, which expects no resend [MQTT-3.1.2-4] (v3.1.1: MQTT-3.1.2-6).
  const parked = c.gw.unpark(c.clientId!)
  c.resends = cleanStart ? null : parked
  c.state = ConnState.connected
  c.lastActivity = c.gw.now
  // [MQTT-3.2.2-2/-3] (v3.1.1: MQTT-3.2.2-1/-2/-3) Session Present says whether the session was resumed.
  const sessionPresent = restored !== undefined
  c.write(
    mqtt.generate(
      c.version === 5
        ? { cmd: 'connack', reasonCode: ReasonCode.success, sessionPresent, properties }
        : { cmd: 'connack', returnCode: CONNACK_V3.get(ReasonCode.success)!, sessionPresent },
      { protocolVersion: c.version },
    ),
  )
  // A resumed session's subscriptions may already take commands.
  c.gw.commands.update(c)
  c.resumeAfterConnect()
}

/**
 * Refuses the CONNECT and closes: a v5 client gets a CONNACK with `rc`, a v3.1.1 one the return code that says
 * the same, or none where no return code does (codes.ts). A refusing CONNACK is followed by the close
 * [MQTT-3.2.2-7] (v3.1.1: MQTT-3.2.2-5), and Session Present is 0 [MQTT-3.2.2-6] (v3.1.1: MQTT-3.2.2-4).
 */
export function refuseConnect(c: Connection, rc: number, why: string): void {
  const rc3 = CONNACK_V3.get(rc)
  if (c.version === 5) {
    const properties = { reasonString: why }
    c.write(
      mqtt.generate(
        { cmd: 'connack', reasonCode: rc, sessionPresent: false, properties },
        { protocolVersion: 5 },
      ),
    )
  } else if (rc3 !== undefined) {
    c.write(mqtt.generate({ cmd: 'connack', returnCode: rc3, sessionPresent: false }))
  }
  c.close(`connect refused: ${why}`)
}
