# Sourced by the PostgreSQL benches: builds shoal unless $SHOAL names one, starts a
# throwaway cluster (fsync and synchronous_commit on) in a fresh directory $work on
# a free $port, run as `postgres` when root ("${as_pg[@]}"), stopped and removed at
# exit; $PG_BIN is where its programs are (default: the newest Debian version).
if [ -z "${SHOAL:-}" ]; then
  cargo build --release --locked -q -p shoal-cli
  SHOAL=$PWD/target/release/shoal
fi
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
work=$(mktemp -d)
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$work"
  as_pg=(runuser -u postgres --)
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$PG_BIN/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 >/dev/null
"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/data" -l "$work/log" -w start \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on" >/dev/null
trap '"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null; rm -rf "$work"' EXIT
