# Shared by scripts/test and scripts/local: project-local tools and a local DynamoDB API.
# Everything is installed under .tools/ (git-ignored) from PyPI; nothing global is touched.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools"
export SAM_CLI_TELEMETRY=0

# ensure_venv NAME REQUIREMENTS: a venv under .tools/NAME with REQUIREMENTS installed, reinstalled
# only when the requirements file changes.
ensure_venv() {
  local venv="$TOOLS/$1" requirements="$ROOT/scripts/$2"
  local stamp
  stamp="$venv/.installed-$(sha256sum "$requirements" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "==> installing $(grep -v '^#' "$requirements" | xargs) into .tools/$1"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    touch "$stamp"
  fi
}

ensure_tools() {
  command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
  command -v python3 >/dev/null || { echo "python3 (3.9 or newer) is required" >&2; exit 1; }
  ensure_venv py requirements-dev.txt
  ensure_venv sam requirements-sam.txt
  export PATH="$TOOLS/py/bin:$PATH"
}

# The Lambda runs on arm64 (Graviton): `sam build` cross-compiles with cargo-lambda and zig.
ensure_arm64_target() {
  if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    echo "==> rustup target add aarch64-unknown-linux-gnu"
    rustup target add aarch64-unknown-linux-gnu || {
      echo "could not install the Rust arm64 target, which sam build needs" >&2; exit 1; }
  fi
}

free_port() {
  "$TOOLS/py/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_dynamodb: starts the serialized moto server on a free port; sets DYNAMODB_ENDPOINT and
# DYNAMODB_PID. The caller's EXIT trap must call stop_dynamodb.
start_dynamodb() {
  local port log="$TOOLS/moto.log"
  port=$(free_port)
  "$TOOLS/py/bin/python" "$ROOT/scripts/moto_server.py" "$port" >"$log" 2>&1 &
  DYNAMODB_PID=$!
  DYNAMODB_ENDPOINT="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    if "$TOOLS/py/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('$DYNAMODB_ENDPOINT/moto-api/')" 2>/dev/null; then
      echo "==> local DynamoDB API (moto) at $DYNAMODB_ENDPOINT"
      return 0
    fi
    kill -0 "$DYNAMODB_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "the local DynamoDB API did not start; its log:" >&2
  cat "$log" >&2
  exit 1
}

stop_dynamodb() {
  if [ -n "${DYNAMODB_PID:-}" ]; then
    kill "$DYNAMODB_PID" 2>/dev/null || true
    wait "$DYNAMODB_PID" 2>/dev/null || true
  fi
}
