#!/bin/sh
# hack/pkg-version.sh [DIR] - the package version (deb and rpm) of the git
# checkout in DIR (default: the current directory), on stdout.
#
#   at tag v1.2.3, clean               1.2.3
#   at tag v1.3.0-rc.1                 1.3.0~rc.1          (before 1.3.0)
#   5 commits after v1.2.3             1.2.3+git5.gHASH    (after 1.2.3, before 1.2.4)
#   5 commits after v1.3.0-rc.1        1.3.0~rc.1+git5.gHASH
#   no v* tag at all, 57 commits       0.0.0+git57.gHASH   (before any release)
#   uncommitted changes                ... + .dirty        (after the same commit, clean)
#   not a git checkout                 0.0.0+unknown
#
# Why these characters: dpkg and rpm both sort "~" before anything, even the
# end of the version (so a pre-release comes before its release), and treat a
# "+" suffix as newer than the version without it but older than the next
# number (1.2.3 < 1.2.3+git5 < 1.2.4 < 1.3.0~rc.1 < 1.3.0). The commit count
# since the tag comes first in the suffix so that later builds of one branch
# sort later; the hash only tells builds with the same count apart. rpm's "^"
# (made for snapshots) is not valid in a Debian version, so "+" serves both.
# "-" is not allowed in an rpm version at all, hence tag "-" becomes "~".
# test/packaging/version_test.go checks every ordering here with
# `dpkg --compare-versions` and rpm's own rpm.vercmp.
set -eu

cd "${1:-.}"
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo 0.0.0+unknown
	exit 0
fi

hash=$(git rev-parse --short=12 HEAD)
dirty=""
git diff --quiet HEAD -- 2>/dev/null || dirty=.dirty

if desc=$(git describe --tags --match 'v[0-9]*' --long --abbrev=12 2>/dev/null); then
	# vTAG-N-gHASH; TAG may itself contain "-" (v1.3.0-rc.1).
	n=${desc%-g*}
	n=${n##*-}
	tag=${desc%-*-g*}
	base=$(printf '%s\n' "${tag#v}" | tr - '~')
else
	n=$(git rev-list --count HEAD)
	base=0.0.0
fi

if [ "$n" = 0 ] && [ -z "$dirty" ]; then
	echo "$base"
else
	echo "$base+git$n.g$hash$dirty"
fi
