#!/usr/bin/env python3
"""Writes a PSKC file (RFC 6030) of TOTP hardware-token seeds, encrypted as token makers ship
them: each secret under a pre-shared AES-128 key (CBC, the IV first), a MAC key encrypted under
the same key, and HMAC-SHA1 over each encrypted value. The tests make their own files with it.

    make-pskc.py PSK_HEX OUT SERIAL=SECRET_HEX [SERIAL=SECRET_HEX ...] [--tamper]

--tamper flips one bit of the first encrypted secret after its MAC was computed.
Needs the `cryptography` package (in ./.venv with pkilint).
"""
import base64, hmac, hashlib, os, sys
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

def encrypt(key, data):
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + enc.update(padded) + enc.finalize()

def main():
    args = [a for a in sys.argv[1:] if a != "--tamper"]
    tamper = "--tamper" in sys.argv
    psk, out, tokens = bytes.fromhex(args[0]), args[1], args[2:]
    mac_key = os.urandom(20)
    b64 = lambda b: base64.b64encode(b).decode()
    packages = []
    for i, token in enumerate(tokens):
        serial, secret_hex = token.split("=")
        value = encrypt(psk, bytes.fromhex(secret_hex))
        mac = hmac.new(mac_key, value, hashlib.sha1).digest()
        if tamper and i == 0:
            value = value[:20] + bytes([value[20] ^ 1]) + value[21:]
        packages.append(f"""
  <pskc:KeyPackage>
    <pskc:DeviceInfo><pskc:Manufacturer>inkan-test</pskc:Manufacturer><pskc:SerialNo>{serial}</pskc:SerialNo></pskc:DeviceInfo>
    <pskc:Key Id="{serial}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
      <pskc:AlgorithmParameters><pskc:ResponseFormat Length="6" Encoding="DECIMAL"/></pskc:AlgorithmParameters>
      <pskc:Data>
        <pskc:Secret>
          <pskc:EncryptedValue>
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData><xenc:CipherValue>{b64(value)}</xenc:CipherValue></xenc:CipherData>
          </pskc:EncryptedValue>
          <pskc:ValueMAC>{b64(mac)}</pskc:ValueMAC>
        </pskc:Secret>
        <pskc:TimeInterval><pskc:PlainValue>30</pskc:PlainValue></pskc:TimeInterval>
      </pskc:Data>
    </pskc:Key>
  </pskc:KeyPackage>""")
    document = f"""<?xml version="1.0" encoding="UTF-8"?>
<pskc:KeyContainer Version="1.0" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
  <pskc:EncryptionKey><ds:KeyName>Pre-shared-key</ds:KeyName></pskc:EncryptionKey>
  <pskc:MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
    <pskc:MACKey>
      <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
      <xenc:CipherData><xenc:CipherValue>{b64(encrypt(psk, mac_key))}</xenc:CipherValue></xenc:CipherData>
    </pskc:MACKey>
  </pskc:MACMethod>{"".join(packages)}
</pskc:KeyContainer>
"""
    with open(out, "w") as f:
        f.write(document)

main()
