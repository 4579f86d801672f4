#!/usr/bin/env python3
"""Writes tests/data/encrypted.pdf, the one PDF fixture the tests cannot make at run time
(cairo, which mkpdf uses, does not encrypt). Kept as documentation of how the committed
file was made; the tests do not run it (CI has no Python).

    python3 tests/tools/mkencrypted.py tests/data/encrypted.pdf

One page with the text "Secret text" in Helvetica, encrypted with the standard security
handler, revision 2 (40-bit RC4; PDF 1.7, 7.6.3), user password "secret", owner password
"owner". A reader needs the user password to open it: poppler without one reports
POPPLER_ERROR_ENCRYPTED. Only the standard library is used; RC4 and the key derivation
(algorithms 2, 3 and 4 of the specification) are written out below.
"""
import hashlib
import sys

PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
USER, OWNER = b"secret", b"owner"
PERMS = -4  # every permission; bits 1-2 must be 0
FILE_ID = bytes.fromhex("6361746e612d656e637279707465642d")


def rc4(key, data):
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for b in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def padded(pw):
    return (pw + PAD)[:32]


# Algorithm 3 (revision 2): the owner entry O.
o_key = hashlib.md5(padded(OWNER)).digest()[:5]
O = rc4(o_key, padded(USER))
# Algorithm 2: the file key; algorithm 4: the user entry U.
key = hashlib.md5(padded(USER) + O + PERMS.to_bytes(4, "little", signed=True) + FILE_ID).digest()[:5]
U = rc4(key, PAD)


def obj_key(num, gen):
    return hashlib.md5(key + num.to_bytes(3, "little") + gen.to_bytes(2, "little")).digest()[:10]


content = rc4(obj_key(4, 0), b"BT /F1 24 Tf 72 720 Td (Secret text) Tj ET")
objects = [
    b"<< /Type /Catalog /Pages 2 0 R >>",
    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
    b" /Resources << /Font << /F1 5 0 R >> >> >>",
    b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
    % (O.hex().encode(), U.hex().encode(), PERMS),
]
out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
offsets = []
for n, body in enumerate(objects, 1):
    offsets.append(len(out))
    out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
xref = len(out)
out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
for off in offsets:
    out += b"%010d 00000 n \n" % off
out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 6 0 R /ID [<%s> <%s>] >>\n" % (
    len(objects) + 1, FILE_ID.hex().encode(), FILE_ID.hex().encode())
out += b"startxref\n%d\n%%%%EOF\n" % xref
with open(sys.argv[1], "wb") as f:
    f.write(out)
