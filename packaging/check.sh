#!/usr/bin/env bash
# Checks the packages in DIR (default dist): lintian and rpmlint report no
# errors, the file lists match the golden files in packaging/testdata (run
# with UPDATE_GOLDEN=1 to rewrite them), the rpm carries its scripts, and the
# rpm installs into an alternate root with rpm --root.
set -euo pipefail
dir=${1:-dist}
here=$(cd "$(dirname "$0")" && pwd)
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0777 "$tmp"

# dpkg-deb -c / rpm -qlv without sizes and dates: "mode owner/group path".
deb_files() { dpkg-deb -c "$1" | awk '{print $1, $2, $6}' | sed 's#^\(.* \)\./#\1/#; s#/$##' | grep -v ' /$' | sort; }
rpm_files() { rpm -qlvp "$1" 2>/dev/null | awk '{print $1, $3"/"$4, $9}' | sort; }

compare() { # name actual-file golden-file
	if [ "${UPDATE_GOLDEN:-}" = 1 ]; then cp "$2" "$3"; echo "updated $3"; return; fi
	if ! diff -u "$3" "$2"; then echo "FAIL: $1 file list differs from $3"; fail=1; else echo "ok: $1 file list matches $(basename "$3")"; fi
}

for deb in "$dir"/*.deb; do
	# lintian exits 1 when it reports errors and 2 when it could not check
	# the package at all (it used to run with "|| true", which passed both).
	rc=0
	out=$(lintian --tag-display-limit 0 "$deb" 2>&1) || rc=$?
	out=$(echo "$out" | grep -v 'running with root privileges' || true)
	echo "$out" | sed "s#^#lintian $(basename "$deb"): #"
	if [ "$rc" -ge 2 ]; then echo "FAIL: lintian could not check $deb (exit $rc)"; fail=1; fi
	if [ "$rc" -eq 1 ] || echo "$out" | grep -q '^E:'; then echo "FAIL: lintian errors in $deb"; fail=1; fi
	deb_files "$deb" > "$tmp/deb.files"
	compare "$(basename "$deb")" "$tmp/deb.files" "$here/testdata/deb-files.golden"
done

for rpm in "$dir"/*.rpm; do
	# nfpm writes absolute names into the rpm payload, and rpmlint unpacks
	# it with cpio: as root that would write the package's files into /.
	# As nobody it cannot, and it checks the headers and scripts all the same.
	cp "$rpm" "$here/rpmlint.toml" "$tmp/"
	out=$(cd "$tmp" && setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$tmp" TMPDIR="$tmp" \
		rpmlint -c "$tmp/rpmlint.toml" "$tmp/$(basename "$rpm")" 2>&1 || true)
	echo "$out" | grep -E ' [EW]: |errors' | sed "s#^#rpmlint $(basename "$rpm"): #"
	if ! echo "$out" | grep -q ' 0 errors'; then echo "FAIL: rpmlint errors in $rpm"; fail=1; fi
	rpm_files "$rpm" > "$tmp/rpm.files"
	compare "$(basename "$rpm")" "$tmp/rpm.files" "$here/testdata/rpm-files.golden"
	scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
	for s in postinstall preuninstall postuninstall; do
		if ! echo "$scripts" | grep -q "^$s scriptlet"; then echo "FAIL: $rpm has no $s scriptlet"; fail=1; fi
	done
done

# Install the host architecture's rpm into an alternate root. The root is
# empty (no shell), so its scriptlets cannot run here: the node suite installs
# the rpm with its scriptlets under a real systemd (TestRPMOnSystemd).
rpm=$(ls "$dir"/*."$(uname -m)".rpm)
root="$tmp/root"
rpm --root "$root" --initdb
rpm --root "$root" -i --nodeps --noscripts "$rpm"
rpm --root "$root" -q certagent
"$root/usr/bin/certagent" version
for f in usr/bin/certagent usr/lib/systemd/system/certagent.service usr/lib/systemd/system/kubelet.service.d/10-certagent.conf etc/certagent/config.yaml; do
	[ -f "$root/$f" ] || { echo "FAIL: rpm --root install lacks /$f"; fail=1; }
done
rpm --root "$root" -e --noscripts certagent
[ ! -e "$root/usr/bin/certagent" ] || { echo "FAIL: rpm -e left /usr/bin/certagent"; fail=1; }
echo "ok: rpm --root install and erase"

exit $fail
