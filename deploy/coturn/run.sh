#!/bin/sh
# coturn's entrypoint in docker-compose.yml: TURN over TLS (turns:, port 5349) with the
# certificate that Caddy obtains for $CONVENE_DOMAIN, read from Caddy's data volume (mounted
# read-only at $CADDY_DATA). docs/deploy.md, "TURN over TLS".
#
# Caddy keeps its keys readable by root only, so this runs as root: it copies the newest
# certificate and key that Caddy holds for the domain (whichever issuer: its internal CA or
# an ACME one) to $TLS_DIR for coturn, which drops to nobody once it listens (--proc-user).
# Every $CHECK_SECONDS it compares Caddy's certificate with the copy; when Caddy has renewed
# it (its internal CA's certificates live 12 hours, ACME ones 90 days), it copies it again
# and sends coturn SIGUSR2, which reloads the certificate without dropping a relayed call.
# Without a certificate after $WAIT_SECONDS (Caddy could not get one yet), coturn starts
# without TLS (STUN and TURN on 3478 work); once one appears this exits, and Docker's restart
# policy starts coturn again with it. The arguments are turnserver's.
set -eu
domain="${CONVENE_DOMAIN:?set CONVENE_DOMAIN}"
store="${CADDY_DATA:-/caddy-data}/caddy/certificates"
tls="${TLS_DIR:-/tmp/coturn-tls}"
check="${CHECK_SECONDS:-600}"
wait_for="${WAIT_SECONDS:-120}"
turnserver="${TURNSERVER:-turnserver}"

# Caddy's newest certificate for the domain: <store>/<issuer>/<domain>/<domain>.crt.
newest() {
	find "$store" -path "*/$domain/$domain.crt" 2>/dev/null | xargs -r ls -t 2>/dev/null | head -n 1
}

# Copies it (and its key) for coturn, atomically; fails when there is none.
copy() {
	crt="$(newest)"
	[ -n "$crt" ] && [ -f "${crt%.crt}.key" ] || return 1
	mkdir -p "$tls"
	cp "$crt" "$tls/cert.pem.new"
	cp "${crt%.crt}.key" "$tls/key.pem.new"
	chown nobody "$tls/cert.pem.new" "$tls/key.pem.new"
	chmod 600 "$tls/cert.pem.new" "$tls/key.pem.new"
	mv -f "$tls/key.pem.new" "$tls/key.pem"
	mv -f "$tls/cert.pem.new" "$tls/cert.pem"
	echo "coturn-tls: using $crt"
}

waited=0
until copy; do
	if [ "$waited" -ge "$wait_for" ]; then
		echo "coturn-tls: no certificate for $domain in $store after ${wait_for}s: starting without TLS" >&2
		break
	fi
	sleep 2
	waited=$((waited + 2))
done
with_tls=no
[ -f "$tls/cert.pem" ] && with_tls=yes

"$turnserver" "$@" --cert="$tls/cert.pem" --pkey="$tls/key.pem" \
	--proc-user=nobody --proc-group=nogroup &
pid=$!
stopping=no
trap 'stopping=yes; kill -TERM "$pid" 2>/dev/null' TERM INT

while [ "$stopping" = no ] && kill -0 "$pid" 2>/dev/null; do
	sleep "$check" &
	wait $! || true
	[ "$stopping" = no ] && kill -0 "$pid" 2>/dev/null || break
	crt="$(newest)"
	[ -n "$crt" ] || continue
	if [ "$with_tls" = no ]; then
		echo "coturn-tls: a certificate for $domain appeared: restarting coturn with TLS" >&2
		kill -TERM "$pid"
		wait "$pid" || true
		exit 1
	fi
	if ! cmp -s "$crt" "$tls/cert.pem" && copy; then
		echo "coturn-tls: certificate renewed: reloading (SIGUSR2)"
		kill -USR2 "$pid"
	fi
done
wait "$pid"
