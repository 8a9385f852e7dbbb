/**
 * The user data of an iotcore droplet: a `#cloud-config` document (cloud-init's format, run once per instance
 * on first boot) that installs Node.js and iotcore and runs it as a systemd service under its own user, with
 * the embedded PostgreSQL and the local queue in /var/lib/iotcore.
 */
export interface CloudInitOptions {
  adminToken: string
  httpPort: number
  mqttPort: number
  /** What `npm install -g` installs: a version of the package, a tarball URL, a git URL. */
  packageSpec: string
  nodeMajor: number
  /** false for a droplet made from an iotcore snapshot: Node and iotcore are there already. */
  install: boolean
}

export const DATA_DIR = '/var/lib/iotcore'
const ENV_FILE = '/etc/iotcore/iotcore.env'

const unit = `[Unit]
Description=iotcore IoT platform
After=network-online.target
Wants=network-online.target

[Service]
User=iotcore
Group=iotcore
EnvironmentFile=${ENV_FILE}
WorkingDirectory=${DATA_DIR}
ExecStart=/usr/bin/iotcore start
Restart=always
RestartSec=2
# iotcore's own shutdown deadline is 30 s; systemd waits a little longer before SIGKILL.
TimeoutStopSec=40
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`

/** YAML's literal block: each line indented under the key. */
function block(text: string, indent: string): string {
  return text
    .trimEnd()
    .split('\n')
    .map((l) => (l ? indent + l : ''))
    .join('\n')
}

export function cloudInit(o: CloudInitOptions): string {
  const env = [
    `IOTCORE_ADMIN_TOKEN=${o.adminToken}`,
    `IOTCORE_DATA_DIR=${DATA_DIR}`,
    `IOTCORE_HTTP_PORT=${o.httpPort}`,
    `IOTCORE_MQTT_PORT=${o.mqttPort}`,
    'IOTCORE_LOG_LEVEL=info',
  ].join('\n')
  const files = [
    `  - path: ${ENV_FILE}
    permissions: '0600'
    content: |
${block(env, '      ')}`,
  ]
  if (o.install)
    files.push(`  - path: /etc/systemd/system/iotcore.service
    content: |
${block(unit, '      ')}`)
  const run = o.install
    ? [
        // Node.js from NodeSource's apt repository: Ubuntu's own nodejs is older than iotcore's engines.
        `curl -fsSL https://deb.nodesource.com/setup_${o.nodeMajor}.x -o /tmp/nodesource_setup.sh`,
        'bash /tmp/nodesource_setup.sh',
        'apt-get install -y nodejs',
        `npm install -g --no-audit --no-fund ${o.packageSpec}`,
        `install -d -o iotcore -g iotcore -m 0750 ${DATA_DIR}`,
        'systemctl daemon-reload',
        'systemctl enable --now iotcore',
      ]
    : // The snapshot's service is enabled already; it restarts to read the new environment file.
      ['systemctl restart iotcore']
  return `#cloud-config
# iotcore ${o.install ? 'install' : 'from a snapshot'}: made by \`iotcore cloud up\`
users:
  - default
  - name: iotcore
    system: true
    shell: /usr/sbin/nologin
    homedir: ${DATA_DIR}
write_files:
${files.join('\n')}
runcmd:
${run.map((c) => `  - ${JSON.stringify(c)}`).join('\n')}
`
}
