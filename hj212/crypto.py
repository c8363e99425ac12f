"""HJ 212-2025 encrypted CP: SM4 in ECB mode with the logger's 128-bit key (``sm4_key`` in the park model).

The ciphertext travels as hexadecimal text between ``CP=&&`` and ``&&`` (the framing stays ASCII and its
length and CRC are over that text); the plaintext is the ordinary CP content with PKCS#7 padding. The
cipher is the ``cryptography`` package's SM4 (OpenSSL's), never a hand-written one.
"""

from __future__ import annotations

import re

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from smartpark.schema import HJ212_DECRYPT

from .packet import PacketError

_HEXTEXT = re.compile(r"(?:[0-9A-Fa-f]{32})+")


def encrypt_cp(plain: str, key_hex: str) -> str:
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain.encode()) + padder.finalize()
    enc = Cipher(algorithms.SM4(bytes.fromhex(key_hex)), modes.ECB()).encryptor()
    return (enc.update(data) + enc.finalize()).hex().upper()


def decrypt_cp(text: str, key_hex: str, mn: str | None = None) -> str:
    """Hex ciphertext -> CP content; anything that does not decrypt to UTF-8 text is ``hj212_decrypt``."""
    if not _HEXTEXT.fullmatch(text):
        raise PacketError(HJ212_DECRYPT, "encrypted CP is not whole SM4 blocks in hexadecimal", mn)
    dec = Cipher(algorithms.SM4(bytes.fromhex(key_hex)), modes.ECB()).decryptor()
    data = dec.update(bytes.fromhex(text)) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(data) + unpadder.finalize()
        return plain.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise PacketError(HJ212_DECRYPT, "CP does not decrypt with the logger's SM4 key", mn) from None
