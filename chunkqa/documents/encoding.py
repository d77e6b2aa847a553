"""Bytes → text for documents that are not PDFs: BOMs, UTF-8, then a declared or detected legacy encoding.

Owns the BOM table, strict UTF-8 first (no warning), the charset an HTML page declares, and otherwise
charset-normalizer's guess among the legacy encodings browsers still read, with cp1252 (the web's
default for unlabelled Western text) taken whenever the detector finds it about as plausible as its
first choice: its language scores cannot tell French in cp1252 from Croatian in cp1250 on a page of
text, so Turkish or Baltic text in cp1254 or cp1257 may come out as cp1252. A guess leaves a warning
(which names the encoding) for the `Document`; binary input (NUL bytes, or no encoding that fits) is
refused with a `DocumentError`. Newlines come out as "\\n". charset-normalizer is imported only when
a file is not UTF-8.
"""

from __future__ import annotations

import codecs

from chunkqa.errors import DocumentError

__all__ = ["decode_text", "not_text"]

# UTF-32 first: its little-endian BOM starts with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_NOT_TEXT_HINT = (
    "Pass a text (.txt, .md), HTML or .pdf file; text in an encoding chunkqa cannot tell converts to "
    "UTF-8 with `iconv -f ENCODING -t utf-8 in.txt > out.txt`."
)
_PREFERRED = "cp1252"
# The legacy encodings of the WHATWG Encoding Standard (those browsers still read) as Python codecs,
# supersets where the standard says so. Leaving out the rest (most DOS and old Mac code pages) keeps
# rare ones from winning on short texts.
_CANDIDATES = [
    "cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "cp874",
    "cp866", "koi8_r", "koi8_u", "mac_roman", "mac_cyrillic", "iso8859_2", "iso8859_3", "iso8859_4",
    "iso8859_5", "iso8859_6", "iso8859_7", "iso8859_8", "iso8859_10", "iso8859_13", "iso8859_14",
    "iso8859_15", "iso8859_16", "cp932", "euc_jp", "iso2022_jp", "cp949", "gb18030", "big5hkscs",
]  # fmt: skip
_CHAOS_SLACK = 0.05  # cp1252 may look this much messier to the detector than its first choice
_LEGACY = frozenset(codecs.lookup(name).name for name in _CANDIDATES)
# How the Encoding Standard reads what a page may declare: labels Python lacks, and the supersets it
# decodes in place of the encodings named (Latin-1 and ASCII as cp1252, Shift_JIS as cp932, ...).
_LABELS = {"windows-874": "cp874", "x-mac-cyrillic": "mac_cyrillic", "iso-8859-8-i": "iso8859_8"}
_SUPERSETS = {
    "ascii": "cp1252", "iso8859-1": "cp1252", "iso8859-9": "cp1254", "iso8859-11": "cp874",
    "tis-620": "cp874", "shift_jis": "cp932", "euc_kr": "cp949", "gbk": "gb18030", "gb2312": "gb18030",
    "big5": "big5hkscs",
}  # fmt: skip


def decode_text(data: bytes, label: str, declared: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The text `data` holds and the warnings about its decoding; `declared` is an HTML page's charset.

    `label` names the input in errors. Raises `DocumentError` for input that is not text.
    """
    bom_encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    warnings: tuple[str, ...] = ()
    try:
        text = data.decode(bom_encoding or "utf-8")
    except UnicodeDecodeError as exc:
        if bom_encoding:
            shown = bom_encoding.removesuffix("-sig").upper()
            raise not_text(label, f"invalid {shown} at byte {exc.start}") from exc
        text, warnings = _decode_legacy(data, label, f"invalid UTF-8 at byte {exc.start}", declared)
    if "\x00" in text:
        raise not_text(label, "it contains NUL bytes")
    return text.replace("\r\n", "\n").replace("\r", "\n"), warnings


def not_text(label: str, detail: str) -> DocumentError:
    return DocumentError(f"{label} does not look like text or PDF ({detail})", hint=_NOT_TEXT_HINT)


def _decode_legacy(data: bytes, label: str, detail: str, declared: str | None) -> tuple[str, tuple[str, ...]]:
    if b"\x00" in data:
        raise not_text(label, detail)
    encoding = _declared_codec(declared)
    if encoding:
        try:
            return data.decode(encoding), ()  # the page says what it is: no guess, no warning
        except UnicodeDecodeError:
            pass
    encoding = _guess(data)
    if encoding is None:
        raise not_text(label, f"{detail}, and no other text encoding fits")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:  # the detector samples large inputs
        raise not_text(label, f"{detail}, nor {encoding} at byte {exc.start}") from exc
    return text, (f"decoded as {encoding} (not valid UTF-8; if it reads wrongly, convert it to UTF-8)",)


def _guess(data: bytes) -> str | None:
    """charset-normalizer's best legacy encoding for `data`, cp1252 when about as good; None: binary."""
    from charset_normalizer import from_bytes

    matches = from_bytes(data, cp_isolation=_CANDIDATES)
    best = matches.best()
    if best is None:
        return None
    # Its language scores are noise on short texts; its mess scores are not.
    as_good = any(
        _PREFERRED in match.could_be_from_charset and match.chaos <= best.chaos + _CHAOS_SLACK
        for match in matches
    )
    if as_good and _fits(data, _PREFERRED):
        return _PREFERRED
    return codecs.lookup(best.encoding).name


def _declared_codec(label: str | None) -> str | None:
    """The legacy codec a browser reads for the charset `label` a page declares; None for the rest."""
    if not label:
        return None
    try:
        codec = codecs.lookup(_LABELS.get(label.lower(), label)).name
    except LookupError:
        return None
    codec = _SUPERSETS.get(codec, codec)
    return codec if codec in _LEGACY else None  # UTF-8 and UTF-16 were tried; "hex" is no charset


def _fits(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True
