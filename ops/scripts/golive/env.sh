# Sourced by the go-live scripts: golive_load_env NAME|FILE reads the settings of one
# environment (ops/env/NAME.env, or a file path) into the environment, and the producer's
# password from PRODUCER_DATABASE_PASSWORD_FILE into PGPASSWORD, so no secret is ever on a
# command line or in output.
GOLIVE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
export GOLIVE_ROOT
PY=${PY:-/usr/bin/python3}

golive_load_env() {
  local name=${1:-local} file
  case "$name" in
    */*|*.env) file=$name ;;
    *) file=$GOLIVE_ROOT/ops/env/$name.env ;;
  esac
  if [ ! -f "$file" ]; then
    if [ -f "$file.example" ]; then
      echo "no $file: copy $file.example to $file and fill it in" >&2
    else
      echo "no settings for environment '$name' ($file)" >&2
    fi
    return 2
  fi
  set -a
  # shellcheck disable=SC1090
  . "$file" || { set +a; return 2; }
  set +a
  GOLIVE_ENV=$(basename "$file" .env)
  export GOLIVE_ENV
  if [ -n "${PRODUCER_DATABASE_PASSWORD_FILE:-}" ]; then
    if [ ! -r "$PRODUCER_DATABASE_PASSWORD_FILE" ]; then
      echo "PRODUCER_DATABASE_PASSWORD_FILE $PRODUCER_DATABASE_PASSWORD_FILE is not readable" >&2
      return 2
    fi
    PGPASSWORD=$(head -n 1 "$PRODUCER_DATABASE_PASSWORD_FILE")
    export PGPASSWORD
  fi
  return 0
}
