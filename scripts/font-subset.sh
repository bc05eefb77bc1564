#!/usr/bin/env bash
# Regenerates assets/fonts/NotoSansCJKsc-Medium-subset.otf, the font the kiosk screen embeds:
# Noto Sans CJK SC Medium (SIL Open Font License 1.1, Debian's fonts-noto-cjk-extra) cut down to
# what a kiosk in a Chinese or English-speaking branch shows:
#   - ASCII, Latin-1, general punctuation (dashes, quotes, ellipsis, €), arrows and a few symbols;
#   - CJK symbols and punctuation (U+3000–303F) and the full-width forms (U+FF00–FFEF);
#   - every character of GB2312: its symbol rows and all 6,763 hanzi (levels 1 and 2), which
#     covers everyday Simplified Chinese, including advisors' names and text messages.
# Characters outside the subset are drawn as a box by the kiosk (src/ui/text.rs).
# Layout tables (GSUB, GPOS), hinting and vertical metrics are dropped: the kiosk lays out text
# itself, horizontally. Needs python3 with fontTools (pip install fonttools) and the Debian
# package fonts-noto-cjk-extra; installs both when missing. Usage: scripts/font-subset.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=assets/fonts/NotoSansCJKsc-Medium-subset.otf
source_font=/usr/share/fonts/opentype/noto/NotoSansCJK-Medium.ttc
# In the collection: 0 JP, 1 KR, 2 SC, 3 TC, 4 HK.
sc_index=2

if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi
if [[ ! -f $source_font ]]; then
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-noto-cjk-extra
fi
if ! python3 -c 'import fontTools' 2>/dev/null; then
    pip install --quiet fonttools || pip install --quiet --break-system-packages fonttools
fi

chars=$(mktemp)
trap 'rm -f "$chars"' EXIT
python3 - "$chars" <<'EOF'
import sys
chars = set()
# GB2312: rows 0xA1-0xA9 (symbols, full-width forms, kana, Greek, Cyrillic, box drawing) and
# 0xB0-0xF7 (hanzi, level 1 then level 2).
for hi in range(0xA1, 0xF8):
    for lo in range(0xA1, 0xFF):
        try:
            chars.add(bytes([hi, lo]).decode("gb2312"))
        except UnicodeDecodeError:
            pass
ranges = [(0x20, 0x7E), (0xA0, 0xFF), (0x2010, 0x206F), (0x2190, 0x21FF), (0x3000, 0x303F), (0xFF00, 0xFFEF)]
for lo, hi in ranges:
    chars.update(chr(c) for c in range(lo, hi + 1))
chars.update("€™•✓✗")
open(sys.argv[1], "w", encoding="utf-8").write("".join(sorted(chars)))
print(f"font-subset.sh: {len(chars)} characters", file=sys.stderr)
EOF

mkdir -p "$(dirname "$out")"
pyftsubset "$source_font" --font-number=$sc_index --text-file="$chars" --output-file="$out" \
    --layout-features='' --no-hinting --name-IDs='*' --name-languages='*' \
    --drop-tables+=GSUB,GPOS,GDEF,BASE,VORG,vhea,vmtx
echo "font-subset.sh: wrote $out ($(stat -c %s "$out") bytes)" >&2
