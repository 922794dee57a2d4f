#!/bin/sh
# certagent pre-removal. deb: $1=remove|upgrade|deconfigure|failed-upgrade.
# rpm: $1=number of instances left (0 on removal, 1 on upgrade).
# Stop and disable on removal only, never on upgrade. Certificates and
# kubelet.conf are left in place.
set -e
case "$1" in
	remove|0)
		if [ -d /run/systemd/system ]; then
			systemctl stop certagent.service >/dev/null 2>&1 || true
		fi
		systemctl disable certagent.service >/dev/null 2>&1 || true
		;;
esac
exit 0
