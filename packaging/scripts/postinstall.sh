#!/bin/sh
# certagent post-install. deb: $1=configure, $2=the version replaced (empty on
# a first install). rpm: $1=number of installed instances (1 install, 2 upgrade).
set -e
action=install
case "$1" in
	configure) [ -z "$2" ] || action=upgrade ;;
	abort-*) exit 0 ;;
	1) action=install ;;
	[0-9]*) action=upgrade ;;
esac
# The certificate directory, private from the start (the unit's sandbox
# needs it to exist; the package does not own it, so it is never removed).
install -d -m 0755 /var/lib/kubelet
[ -d /var/lib/kubelet/pki ] || install -d -m 0700 /var/lib/kubelet/pki
if [ "$action" = install ]; then
	# Enabling works offline (image builds, rpm --root) as well.
	systemctl enable certagent.service >/dev/null 2>&1 || true
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# --no-block: certagent is Type=notify and sends READY only once the API
	# server accepts kubelet.conf; on a node with no bootstrap kubeconfig yet
	# a blocking start would hang the package manager until one is dropped.
	if [ "$action" = install ]; then
		systemctl start --no-block certagent.service || true
	else
		systemctl try-restart --no-block certagent.service || true
	fi
fi
exit 0
