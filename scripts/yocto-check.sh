#!/usr/bin/env bash
# The Yocto layer (yocto/meta-kioskd) through the real tools of the release it declares:
# bitbake -p, -e and -g on each of its recipes, the crates' fetch with their checksums, the
# crates include against Cargo.lock, and oelint-adv (oe-core wrynose, bitbake 2.18, meta-oe and
# meta-rauc, MACHINE qemuarm64). The checker is the deployment's yocto-check.sh; it needs bare
# git mirrors of openembedded/bitbake, openembedded/openembedded-core,
# openembedded/meta-openembedded and rauc/meta-rauc (folders OWNER+NAME/repo) in $YC_MIRRORS.
# Without the checker or the mirrors it says so and is skipped (exit 0); with them, its last
# line is "yocto-check: PASS ..." or "yocto-check: FAIL: reasons" (exit 1).
#
#   scripts/yocto-check.sh                 # YC_MIRRORS=/work/.mirror by default
#   YOCTO_CHECK=/path/yocto-check.sh YC_MIRRORS=/srv/mirrors scripts/yocto-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
checker=${YOCTO_CHECK:-}
if [[ -z $checker ]]; then
    for c in ../shared/tools/yocto-check.sh /work/shared/tools/yocto-check.sh; do
        if [[ -x $c ]]; then checker=$c; break; fi
    done
fi
mirrors=${YC_MIRRORS:-/work/.mirror}
release=${YOCTO_RELEASE:-wrynose}
missing=()
[[ -n $checker ]] || missing+=("the checker yocto-check.sh (set YOCTO_CHECK)")
for m in openembedded+bitbake openembedded+openembedded-core openembedded+meta-openembedded rauc+meta-rauc; do
    [[ -d $mirrors/$m/repo ]] || missing+=("$mirrors/$m")
done
if ((${#missing[@]})); then
    echo "yocto-check: SKIPPED: missing $(IFS=';'; echo "${missing[*]}" | sed 's/;/; /g') (see yocto/README.md)"
    exit 0
fi
# meta-oe of the same release, checked out once from its mirror, readable by bitbake's user.
home=${YC_HOME:-/tmp/yocto}
oe=$home/extra/meta-openembedded-$release
if [[ ! -d $oe/meta-oe ]]; then
    mkdir -p "$home/extra"
    git clone -q -b "$release" "$mirrors/openembedded+meta-openembedded/repo" "$oe"
fi
chmod -R a+rX "$home/extra"
YC_MIRRORS=$mirrors YOCTO_RELEASE=$release EXTRA_LAYERS="$oe/meta-oe" exec "$checker" yocto/meta-kioskd
