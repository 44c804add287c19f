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

# dynalite (npm), the DynamoDB emulator that copies DynamoDB's validation, into .tools/dynalite,
# reinstalled only when scripts/dynalite/package-lock.json changes.
ensure_dynalite() {
  command -v npm >/dev/null || { echo "Node.js with npm is required (dynalite, for the storability tests)" >&2; exit 1; }
  local dir="$TOOLS/dynalite" lock="$ROOT/scripts/dynalite/package-lock.json"
  local stamp
  stamp="$dir/.installed-$(sha256sum "$lock" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "==> installing dynalite into .tools/dynalite"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$ROOT/scripts/dynalite/package.json" "$lock" "$dir/"
    (cd "$dir" && npm ci --silent --no-audit --no-fund) || { echo "could not install dynalite from npm" >&2; exit 1; }
    touch "$stamp"
  fi
}

CARGO_DENY_VERSION=0.20.2

# cargo-deny, built from crates.io into .tools/cargo once (about 3 minutes).
ensure_cargo_deny() {
  CARGO_DENY="$TOOLS/cargo/bin/cargo-deny"
  if ! "$CARGO_DENY" --version 2>/dev/null | grep -q " $CARGO_DENY_VERSION\$"; then
    echo "==> installing cargo-deny $CARGO_DENY_VERSION into .tools/cargo"
    CARGO_INSTALL_ROOT="$TOOLS/cargo" cargo install --quiet --locked "cargo-deny@$CARGO_DENY_VERSION"
  fi
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
  if [ -n "${DYNALITE_PID:-}" ]; then
    kill "$DYNALITE_PID" 2>/dev/null || true
    wait "$DYNALITE_PID" 2>/dev/null || true
  fi
}

# start_dynalite: starts dynalite (in memory, tables active at once) on a free port; sets
# DYNALITE_ENDPOINT and DYNALITE_PID. stop_dynamodb stops it too.
start_dynalite() {
  local port log="$TOOLS/dynalite.log"
  port=$(free_port)
  node "$TOOLS/dynalite/node_modules/dynalite/cli.js" --port "$port" \
    --createTableMs 0 --deleteTableMs 0 --updateTableMs 0 >"$log" 2>&1 &
  DYNALITE_PID=$!
  DYNALITE_ENDPOINT="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    if "$TOOLS/py/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
      echo "==> dynalite (DynamoDB's validation) at $DYNALITE_ENDPOINT"
      return 0
    fi
    kill -0 "$DYNALITE_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "dynalite did not start; its log:" >&2
  cat "$log" >&2
  exit 1
}

# start_function [cargo lambda watch options...]: runs the function under `cargo lambda watch`
# against the local DynamoDB API and TABLE, with the local test secret; sets FUNCTION_PORT and
# WATCH_PID once it accepts invocations. The caller's EXIT trap must call stop_function.
start_function() {
  local py="$TOOLS/py/bin/python" secret
  secret=$("$py" -c 'import json; print(json.load(open("events/env.json"))["SyncFunction"]["CLERK_WEBHOOK_SIGNING_SECRET"])')
  FUNCTION_PORT=$(free_port)
  setsid cargo lambda watch "$@" --invoke-port "$FUNCTION_PORT" --ignore-changes \
    --env-var "CLERK_WEBHOOK_SIGNING_SECRET=$secret" \
    --env-var "TABLE_NAME=$TABLE" \
    --env-var "AWS_ENDPOINT_URL=$DYNAMODB_ENDPOINT" \
    --env-var AWS_REGION=us-east-1 \
    --env-var AWS_ACCESS_KEY_ID=local \
    --env-var AWS_SECRET_ACCESS_KEY=local \
    --env-var AWS_LAMBDA_LOG_FORMAT=JSON \
    >"$TOOLS/watch.log" 2>&1 &
  WATCH_PID=$!
  for _ in $(seq 1 300); do
    "$py" -c "import socket; socket.create_connection(('127.0.0.1', $FUNCTION_PORT), 0.2)" 2>/dev/null && return 0
    kill -0 "$WATCH_PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "cargo lambda watch did not start; its log:" >&2
  cat "$TOOLS/watch.log" >&2
  exit 1
}

stop_function() {
  if [ -n "${WATCH_PID:-}" ]; then
    kill -- "-$WATCH_PID" 2>/dev/null || true
    wait "$WATCH_PID" 2>/dev/null || true
  fi
}

# invoke NAME: sends events/signed/NAME.json to the running function; prints the Lambda response.
invoke() {
  cargo lambda invoke clerk-sync --invoke-port "$FUNCTION_PORT" --data-file "events/signed/$1.json"
}
