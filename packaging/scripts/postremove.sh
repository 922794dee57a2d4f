#!/bin/sh
# certagent post-removal: reload systemd's view of the units. Nothing under
# /etc/kubernetes or /var/lib/kubelet/pki is removed, not even on purge.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
