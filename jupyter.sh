#!/usr/bin/env bash
# Start JupyterLab for LoRA Easy Training, installing first when the environment is not ready.
# Run `./jupyter.sh --help` for the options. Works from any working directory.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./jupyter.sh [--port N] [--ip ADDR] [--no-browser] [--skip-install] [-- JUPYTER_ARGS...]

Starts JupyterLab on the project folder with the Python that installer.py chose. When
`installer.py --check` says something is missing, runs `installer.py` first.

  --port N         port to listen on (default 8888). The server never moves to another port:
                   if N is busy it stops with an error, so the printed link is always right.
  --ip ADDR        address to listen on (default 127.0.0.1: only this computer can connect).
                   On rented GPU servers (VastAI, RunPod) use --ip 0.0.0.0 so that the
                   provider's port mapping / proxy can reach the server; then open the mapped
                   port of the server's public address and keep the token secret.
  --no-browser     do not open a browser (what you want on a remote server)
  --skip-install   start straight away, without checking the environment
  -- ARGS...       anything after -- is passed to JupyterLab unchanged
  -h, --help       show this help

Token authentication is always on. The token comes from the JUPYTER_TOKEN environment
variable when set (an empty one is refused), otherwise a random one is generated. It reaches
JupyterLab through the environment, not the command line, so other users cannot read it in
`ps`. PYTHON=/path/to/python overrides the interpreter.
EOF
}

PORT=8888
IP=127.0.0.1
NO_BROWSER=0
SKIP_INSTALL=0
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT=${2:-}; shift $(( $# > 1 ? 2 : 1 )) ;;
    --port=*) PORT=${1#*=}; shift ;;
    --ip) IP=${2:-}; shift $(( $# > 1 ? 2 : 1 )) ;;
    --ip=*) IP=${1#*=}; shift ;;
    --no-browser) NO_BROWSER=1; shift ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "jupyter.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$PORT" in
  ''|*[!0-9]*) echo "jupyter.sh: --port needs a number from 1 to 65535, got '$PORT'" >&2; exit 2 ;;
esac
if [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
  echo "jupyter.sh: --port needs a number from 1 to 65535, got '$PORT'" >&2; exit 2
fi
if [ -z "$IP" ]; then
  echo "jupyter.sh: --ip needs an address, e.g. 127.0.0.1 or 0.0.0.0" >&2; exit 2
fi

# Refuse before installing anything, so the user is not kept waiting for a server we won't start.
if [ "${JUPYTER_TOKEN+set}" = set ] && [ -z "$JUPYTER_TOKEN" ]; then
  echo "jupyter.sh: JUPYTER_TOKEN is set but empty. A server without a token lets anyone who can reach" >&2
  echo "the port run code on this machine, so it is refused. Unset JUPYTER_TOKEN to get a random token," >&2
  echo "or set it to a long secret string." >&2
  exit 2
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
cd "$HERE"
STATE=.installer_state.json

# The interpreter installer.py recorded; python3 before the first install.
state_python() {
  [ -f "$STATE" ] || return 0
  "$1" -c 'import json, sys; print(json.load(open(sys.argv[1]))["python"])' "$STATE" 2>/dev/null || true
}
pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  local recorded
  recorded=$(state_python python3)
  if [ -n "$recorded" ] && [ -x "$recorded" ]; then echo "$recorded"; else echo python3; fi
}
PY=$(pick_python)
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "jupyter.sh: '$PY' not found. Install Python 3.10-3.12 (3.11 recommended) and rerun." >&2
  exit 1
fi

if [ "$SKIP_INSTALL" = 0 ] && ! "$PY" installer.py --check; then
  echo "==> The environment is not ready: running installer.py"
  if ! "$PY" installer.py; then
    echo "jupyter.sh: the installer failed (see above); JupyterLab was not started." >&2
    exit 1
  fi
  PY=$(pick_python)
fi

if [ -z "${JUPYTER_TOKEN:-}" ]; then
  JUPYTER_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')
fi
export JUPYTER_TOKEN

# Where to poll and what to show: a wildcard address is reached locally through loopback.
case "$IP" in
  0.0.0.0|'*') HOST=127.0.0.1; REMOTE=1 ;;
  ::|'[::]') HOST='[::1]'; REMOTE=1 ;;
  *:*) HOST="[${IP#[}"; HOST="${HOST%]}]"; REMOTE=0 ;;
  *) HOST=$IP; REMOTE=0 ;;
esac
URL="http://$HOST:$PORT/lab?token=$JUPYTER_TOKEN"

# A config file loaded after the user's own: an image's `c.ServerApp.token = ''` must not switch
# authentication off. It holds no secret: it reads the token from the environment.
CONF_DIR=$(mktemp -d "${TMPDIR:-/tmp}/lora-jupyter.XXXXXX")
cat >"$CONF_DIR/jupyter_lab_config.py" <<'EOF'
import os
c.IdentityProvider.token = os.environ["JUPYTER_TOKEN"]
c.PasswordIdentityProvider.token = os.environ["JUPYTER_TOKEN"]
# Our extension makes /api (the version endpoint) ask for the token too; merged, not replaced.
c.ServerApp.jpserver_extensions.update({"core.jupyter_api_lock": True})
EOF

# Background watcher: waits until the server answers, proves that it refuses requests without the
# token (else stops it), prints the link, removes the config folder. Bounded: gives up after 10 min.
WATCHER='
import os, shutil, signal, sys, time, urllib.error, urllib.request
base, pid, conf_dir, url, remote = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def status(path, token=None):
    request = urllib.request.Request(base + path)
    if token:
        request.add_header("Authorization", "token " + token)
    try:
        with opener.open(request, timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None
def alive():
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
deadline = time.monotonic() + 600
while time.monotonic() < deadline and alive() and status("/api") is None:
    time.sleep(0.5)
shutil.rmtree(conf_dir, ignore_errors=True)
if not alive() or status("/api") is None:
    sys.exit(0)
token = os.environ["JUPYTER_TOKEN"]
if any(status(path) != 403 or status(path, token) != 200 for path in ("/api", "/api/status")):
    print("\njupyter.sh: the server does not enforce the token (a Jupyter config disables it?): stopping it.",
          file=sys.stderr, flush=True)
    os.kill(pid, signal.SIGTERM)
    sys.exit(1)
bar = "=" * 78
note = ("\n  On VastAI/RunPod open the port mapped to this one on the server public address,\n"
        "  keeping the ?token=... part." if remote == "1" else "")
print(f"\n{bar}\n  JupyterLab is ready. Open this link in your browser:\n\n    {url}\n{note}\n"
      f"  Stop the server with Ctrl+C.\n{bar}\n", flush=True)
'
"$PY" -c "$WATCHER" "http://$HOST:$PORT" "$$" "$CONF_DIR" "$URL" "$REMOTE" &

ARGS=(-m jupyterlab "--config=$CONF_DIR/jupyter_lab_config.py" "--ServerApp.root_dir=$HERE"
      "--ServerApp.ip=$IP" "--ServerApp.port=$PORT" --ServerApp.port_retries=0
      # Extension endpoints that forgot to declare their auth rule must require the token too.
      --ServerApp.allow_unauthenticated_access=False)
if [ "$NO_BROWSER" = 1 ]; then ARGS+=(--no-browser); fi
if [ "$(id -u)" = 0 ]; then ARGS+=(--allow-root); fi
echo "==> Starting JupyterLab in $HERE with $PY on $IP:$PORT (the link follows once it is ready)"
# exec keeps this process id, so the watcher's pid and a signal to our process group reach the server.
exec "$PY" "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
