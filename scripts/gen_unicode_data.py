# Generates engine/unicode_data.c from llama.cpp's src/unicode-data.cpp (range -> category flags),
# so that character classes match the peer we are checked against exactly. Run:
#   python3 scripts/gen_unicode_data.py build/peers/llama.cpp/src/unicode-data.cpp engine/unicode_data.c
import re, sys
src = open(sys.argv[1]).read()
rf = re.search(r'unicode_ranges_flags = \{(.*?)\};', src, re.S).group(1)
r = [(int(a, 16), int(b, 16)) for a, b in re.findall(r'\{0x([0-9A-Fa-f]+), 0x([0-9A-Fa-f]+)\}', rf)]
out = []
out.append('/*\n * Unicode general-category flags per code point range, as llama.cpp classifies them\n'
           ' * (its src/unicode-data.cpp, generated from the Unicode database). Each entry gives the\n'
           ' * first code point of a range and the CTN__UCAT_* flags that hold up to the next entry.\n'
           ' * Generated data: do not edit by hand.\n */\n')
out.append('#include "unicode.h"\n')
out.append('const ctn__ucat_range ctn__ucat_ranges[] = {')
line = '   '
for a, b in r:
    item = ' {0x%06X, 0x%02X},' % (a, b)
    if len(line) + len(item) > 96:
        out.append(line)
        line = '   '
    line += item
out.append(line)
out.append('};\n')
out.append('const size_t ctn__ucat_n_ranges = sizeof ctn__ucat_ranges / sizeof ctn__ucat_ranges[0];')
open(sys.argv[2], 'w').write('\n'.join(out) + '\n')
