#!/usr/bin/env bash
# The drivers' own test suites through the sidecar, with session reuse on and off
# (docs/reuse.md): pgx's root package and go-sql-driver/mysql's, each against `make demo`'s
# sidecar (its world: PostgreSQL and MariaDB behind the RDS stand-ins, IAM logins), started
# with and without --no-pool. Prints pass / fail / skip counts per suite and mode.
# TestConnectorReturnsTimeout is skipped: it dials 1.1.1.1, and without internet access the
# dial fails early and the test dereferences a nil error (a panic that ends the whole run).
# Usage: hack/test-drivers.sh [bin/sidecar]   (make test-drivers)
set -euo pipefail
SIDECAR=${1:-bin/sidecar}
GO=${GO:-go}
work=$(mktemp -d /tmp/rdsvalet-drivers-XXXXXX)
trap 'kill "$demo" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
modcache=$($GO env GOMODCACHE)
cp -r "$modcache/github.com/jackc/pgx/v5@v5.7.6" "$work/pgx" && chmod -R u+w "$work/pgx"
cp -r "$modcache/github.com/go-sql-driver/mysql@v1.9.3" "$work/mysql" && chmod -R u+w "$work/mysql"
$GO build -o "$work/demo" ./test/cmd/demo

count() { # go test -json on stdin -> "pass N fail N skip N" over tests and subtests
	python3 -c 'import json,sys
c={"pass":0,"fail":0,"skip":0}; failed=[]
for l in sys.stdin:
    try: e=json.loads(l)
    except Exception: continue
    if e.get("Test") and e.get("Action") in c:
        c[e["Action"]]+=1
        if e["Action"]=="fail": failed.append(e["Test"])
print("pass %(pass)d fail %(fail)d skip %(skip)d" % c, ("failed: "+" ".join(failed[:40])) if failed else "")'
}

for mode in on off; do
	flag=""; [ "$mode" = off ] && flag=--no-pool
	"$work/demo" --sidecar "$SIDECAR" $flag --postgres 127.0.0.1:25432 --mysql 127.0.0.1:23306 \
		--postgres-reader 127.0.0.1:25433 --mysql-reader 127.0.0.1:23307 --control 127.0.0.1:28475 \
		--admin 127.0.0.1:29090 --toxiproxy 127.0.0.1:28474 >"$work/demo-$mode.log" 2>&1 &
	demo=$!
	for _ in $(seq 120); do grep -q "demo is up" "$work/demo-$mode.log" && break; sleep 1; done
	grep -q "demo is up" "$work/demo-$mode.log" || { cat "$work/demo-$mode.log"; exit 1; }
	(cd "$work/pgx" && PGX_TEST_DATABASE="host=127.0.0.1 port=25432 user=app dbname=app sslmode=disable" \
		$GO test -count=1 -timeout 15m -json . >"$work/pgx-$mode.json" 2>&1 || true)
	echo "pgx v5.7.6 (root package), reuse $mode: $(count <"$work/pgx-$mode.json")"
	(cd "$work/mysql" && MYSQL_TEST_USER=app MYSQL_TEST_PASS= MYSQL_TEST_PROT=tcp MYSQL_TEST_ADDR=127.0.0.1:23306 \
		MYSQL_TEST_DBNAME=app $GO test -count=1 -timeout 15m -json -skip "^TestConnectorReturnsTimeout$" . >"$work/mysql-$mode.json" 2>&1 || true)
	echo "go-sql-driver/mysql v1.9.3, reuse $mode: $(count <"$work/mysql-$mode.json")"
	kill "$demo"; wait "$demo" 2>/dev/null || true
done
