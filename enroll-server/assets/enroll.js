// enroll.js — browser-side enrollment helpers for inkan.
//
// Generates a key pair with WebCrypto, builds a PKCS#10 CSR, and packs the
// issued certificate(s) plus the private key into a password-protected
// PKCS#12 (or an encrypted PKCS#8 PEM). Dependency-free ES module; runs in
// browsers and in Node 20+ (both expose WebCrypto as globalThis.crypto).

// crypto.subtle only exists in secure contexts (HTTPS or localhost); fail
// with a clear message instead of "cannot read properties of undefined".
const subtle = new Proxy({}, {
  get(_, name) {
    const s = globalThis.crypto && globalThis.crypto.subtle;
    if (!s) throw new Error('WebCrypto (crypto.subtle) is unavailable: the page must be served over HTTPS');
    return s[name].bind(s);
  },
});
const textEncoder = new TextEncoder();

// ---------------------------------------------------------------------------
// Byte helpers
// ---------------------------------------------------------------------------

/** Concatenate Uint8Arrays (or arrays of bytes) into one Uint8Array. */
export function concat(...parts) {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let off = 0;
  for (const a of arrays) {
    out.set(a, off);
    off += a.length;
  }
  return out;
}

/** Lower-case hex string of bytes. */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Bytes from a hex string (whitespace and ':' ignored). */
export function fromHex(hex) {
  const clean = hex.replace(/[\s:]/g, '');
  if (clean.length % 2 !== 0 || /[^0-9a-fA-F]/.test(clean)) throw new Error('invalid hex string');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.substr(i * 2, 2), 16);
  return out;
}

/** Standard base64 of bytes (uses btoa, so no Node Buffer needed). */
export function toBase64(bytes) {
  let bin = '';
  // Chunked so String.fromCharCode never gets too many arguments.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/** Bytes from standard base64 (whitespace ignored). */
export function fromBase64(b64) {
  const bin = atob(b64.replace(/\s+/g, ''));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

// ---------------------------------------------------------------------------
// Minimal DER writer (X.690). Every function returns a complete TLV as a
// Uint8Array, so values compose by plain nesting.
// ---------------------------------------------------------------------------

function derLength(n) {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`invalid DER length ${n}`);
  if (n < 0x80) return Uint8Array.of(n);
  const bytes = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

function tlv(tag, ...contents) {
  const body = concat(...contents);
  return concat([tag], derLength(body.length), body);
}

// Unsigned big-endian magnitude -> minimal two's-complement INTEGER contents:
// drop redundant leading zeros, then prepend 0x00 if the top bit is set so the
// value is not read as negative.
function integer(value) {
  let bytes;
  if (value instanceof Uint8Array) {
    bytes = value;
  } else if (typeof value === 'number' || typeof value === 'bigint') {
    if (typeof value === 'number' && !Number.isSafeInteger(value)) throw new Error(`INTEGER must be a safe integer, got ${value}`);
    let v = BigInt(value);
    if (v < 0n) throw new Error('negative INTEGERs are not supported');
    const arr = [];
    do {
      arr.unshift(Number(v & 0xffn));
      v >>= 8n;
    } while (v > 0n);
    bytes = Uint8Array.from(arr);
  } else {
    throw new Error('INTEGER value must be a number, bigint or Uint8Array');
  }
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  bytes = bytes.subarray(i);
  if (bytes.length === 0) bytes = Uint8Array.of(0);
  if (bytes[0] & 0x80) bytes = concat([0], bytes);
  return tlv(0x02, bytes);
}

function oid(dotted) {
  if (!/^[0-2](\.(0|[1-9][0-9]*))+$/.test(dotted)) throw new Error(`invalid OID "${dotted}"`);
  const arcs = dotted.split('.').map(BigInt);
  if (arcs[0] < 2n && arcs[1] > 39n) throw new Error(`invalid OID "${dotted}"`);
  // The first two arcs share one sub-identifier; each sub-identifier is
  // base-128, most significant group first, high bit = "more follows".
  const subIds = [arcs[0] * 40n + arcs[1], ...arcs.slice(2)];
  const out = [];
  for (let v of subIds) {
    const groups = [Number(v & 0x7fn)];
    for (v >>= 7n; v > 0n; v >>= 7n) groups.unshift(Number(v & 0x7fn) | 0x80);
    out.push(...groups);
  }
  return tlv(0x06, Uint8Array.from(out));
}

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

function checkTagNumber(n) {
  if (!Number.isInteger(n) || n < 0 || n > 30) throw new Error(`context tag number must be 0..30, got ${n}`);
}

const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

/** DER writer: each function returns one encoded TLV (Uint8Array). */
export const der = {
  tlv,
  length: derLength,
  integer,
  oid,
  null: () => Uint8Array.of(0x05, 0x00),
  boolean: (v) => Uint8Array.of(0x01, 0x01, v ? 0xff : 0x00),
  octetString: (bytes) => tlv(0x04, bytes),
  /** BIT STRING with the given number of unused trailing bits (default 0). */
  bitString: (bytes, unusedBits = 0) => tlv(0x03, [unusedBits], bytes),
  sequence: (...items) => tlv(0x30, ...items),
  /** SET with items in the given order (use setOf for DER SET OF). */
  set: (...items) => tlv(0x31, ...items),
  /** SET OF: DER requires the encoded elements in ascending byte order. */
  setOf: (...items) => tlv(0x31, ...[...items].sort(compareBytes)),
  /** [n] EXPLICIT: constructed context tag wrapping the given TLVs. */
  explicit: (n, ...inner) => (checkTagNumber(n), tlv(0xa0 | n, ...inner)),
  /** [n] IMPLICIT: replace the tag of an encoded TLV, keeping its constructed bit. */
  implicit: (n, encoded) => {
    checkTagNumber(n);
    const out = Uint8Array.from(encoded);
    out[0] = 0x80 | (encoded[0] & 0x20) | n;
    return out;
  },
  utf8String: (s) => tlv(0x0c, textEncoder.encode(s)),
  printableString: (s) => {
    if (!PRINTABLE.test(s)) throw new Error(`not a PrintableString: "${s}"`);
    return tlv(0x13, textEncoder.encode(s));
  },
  bmpString: (s) => tlv(0x1e, utf16be(s)),
};

// UTF-16BE code units of a JS string (JS strings already are UTF-16, so
// characters outside the BMP come out as surrogate pairs, as OpenSSL does).
function utf16be(s) {
  const out = new Uint8Array(s.length * 2);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    out[2 * i] = c >> 8;
    out[2 * i + 1] = c & 0xff;
  }
  return out;
}

// ---------------------------------------------------------------------------
// PEM
// ---------------------------------------------------------------------------

/** PEM-encode DER bytes under the given label, 64-character lines. */
export function pemEncode(label, derBytes) {
  const lines = toBase64(derBytes).match(/.{1,64}/g) || [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** All PEM blocks in text, as [{label, der}]. */
export function pemDecodeAll(text) {
  const out = [];
  const re = /-----BEGIN ([^\r\n-]+)-----\r?\n([\s\S]*?)-----END \1-----/g;
  for (const m of text.matchAll(re)) {
    if (m[2].includes(':')) throw new Error(`PEM block "${m[1]}" has headers; not supported`);
    out.push({ label: m[1], der: fromBase64(m[2]) });
  }
  return out;
}

// ---------------------------------------------------------------------------
// Keys and CSR
// ---------------------------------------------------------------------------

const OID = {
  commonName: '2.5.4.3',
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  sha256WithRSAEncryption: '1.2.840.113549.1.1.11',
  sha256: '2.16.840.1.101.3.4.2.1',
  data: '1.2.840.113549.1.7.1',
  encryptedData: '1.2.840.113549.1.7.6',
  pbes2: '1.2.840.113549.1.5.13',
  pbkdf2: '1.2.840.113549.1.5.12',
  hmacWithSHA256: '1.2.840.113549.2.9',
  aes256Cbc: '2.16.840.1.101.3.4.1.42',
  pkcs8ShroudedKeyBag: '1.2.840.113549.1.12.10.1.2',
  certBag: '1.2.840.113549.1.12.10.1.3',
  x509Certificate: '1.2.840.113549.1.9.22.1',
  friendlyName: '1.2.840.113549.1.9.20',
  localKeyId: '1.2.840.113549.1.9.21',
};

const KEY_KINDS = {
  'ecdsa-p256': { name: 'ECDSA', namedCurve: 'P-256' },
  'rsa-2048': {
    name: 'RSASSA-PKCS1-v1_5',
    modulusLength: 2048,
    publicExponent: Uint8Array.of(1, 0, 1),
    hash: 'SHA-256',
  },
};

/** Generate an extractable signing key pair: 'ecdsa-p256' (default) or 'rsa-2048'. */
export async function generateKeyPair(kind = 'ecdsa-p256') {
  const alg = KEY_KINDS[kind];
  if (!alg) throw new Error(`unknown key kind "${kind}" (expected one of: ${Object.keys(KEY_KINDS).join(', ')})`);
  // Extractable: the private key must be exported (PKCS#8) to build the PKCS#12.
  return subtle.generateKey(alg, true, ['sign', 'verify']);
}

function requireKeyPair(keyPair) {
  if (!keyPair || !keyPair.privateKey || !keyPair.publicKey) throw new Error('keyPair must have privateKey and publicKey');
}

// WebCrypto ECDSA returns r||s (IEEE P1363); X.509/PKCS#10 want
// SEQUENCE { INTEGER r, INTEGER s } with minimal integers.
function ecdsaRawToDer(raw) {
  const half = raw.length / 2;
  return der.sequence(der.integer(raw.subarray(0, half)), der.integer(raw.subarray(half)));
}

async function signSha256(privateKey, data) {
  const name = privateKey.algorithm.name;
  if (name === 'ECDSA') {
    const raw = new Uint8Array(await subtle.sign({ name, hash: 'SHA-256' }, privateKey, data));
    // ecdsa-with-SHA256 has absent parameters (RFC 5758).
    return { algorithm: der.sequence(der.oid(OID.ecdsaWithSHA256)), signature: ecdsaRawToDer(raw) };
  }
  if (name === 'RSASSA-PKCS1-v1_5') {
    const signature = new Uint8Array(await subtle.sign({ name }, privateKey, data));
    return { algorithm: der.sequence(der.oid(OID.sha256WithRSAEncryption), der.null()), signature };
  }
  throw new Error(`unsupported key algorithm "${name}"`);
}

/** Build a DER PKCS#10 CSR with subject CN=commonName, signed by keyPair. */
export async function createCsr(keyPair, { commonName } = {}) {
  requireKeyPair(keyPair);
  if (typeof commonName !== 'string' || commonName.trim() === '') throw new Error('commonName must be a non-empty string');
  if (commonName.length > 64) throw new Error('commonName must be at most 64 characters (X.520 ub-common-name)');
  const spki = new Uint8Array(await subtle.exportKey('spki', keyPair.publicKey));
  const subject = der.sequence(der.setOf(der.sequence(der.oid(OID.commonName), der.utf8String(commonName))));
  const info = der.sequence(
    der.integer(0), // version v1
    subject,
    spki,
    der.tlv(0xa0), // attributes [0] IMPLICIT SET OF Attribute: empty
  );
  const { algorithm, signature } = await signSha256(keyPair.privateKey, info);
  return der.sequence(info, algorithm, der.bitString(signature));
}

// ---------------------------------------------------------------------------
// PBES2 (PBKDF2-HMAC-SHA256 + AES-256-CBC), RFC 8018
// ---------------------------------------------------------------------------

export const DEFAULT_ITERATIONS = 600000;
/** PKCS#12 MAC iterations (OpenSSL's default too); see createPkcs12. */
export const DEFAULT_MAC_ITERATIONS = 2048;

function requirePassword(password) {
  if (typeof password !== 'string' || password.length === 0) throw new Error('password must be a non-empty string');
}

function requireIterations(n, what) {
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${what} must be a positive integer, got ${n}`);
}

// Returns the full AlgorithmIdentifier and the ciphertext.
async function pbes2Encrypt(password, plaintext, iterations) {
  const salt = randomBytes(16);
  const iv = randomBytes(16);
  const baseKey = await subtle.importKey('raw', textEncoder.encode(password), 'PBKDF2', false, ['deriveKey']);
  const aesKey = await subtle.deriveKey(
    { name: 'PBKDF2', salt, iterations, hash: 'SHA-256' },
    baseKey,
    { name: 'AES-CBC', length: 256 },
    false,
    ['encrypt'],
  );
  // WebCrypto AES-CBC applies PKCS#7 padding, as PBES2 requires.
  const ciphertext = new Uint8Array(await subtle.encrypt({ name: 'AES-CBC', iv }, aesKey, plaintext));
  const algorithm = der.sequence(
    der.oid(OID.pbes2),
    der.sequence(
      der.sequence(
        der.oid(OID.pbkdf2),
        // keyLength omitted: AES-256 fixes it. prf written explicitly since
        // the default would be hmacWithSHA1.
        der.sequence(der.octetString(salt), der.integer(iterations), der.sequence(der.oid(OID.hmacWithSHA256), der.null())),
      ),
      der.sequence(der.oid(OID.aes256Cbc), der.octetString(iv)),
    ),
  );
  return { algorithm, ciphertext };
}

async function encryptedPrivateKeyInfo(keyPair, password, iterations) {
  requireKeyPair(keyPair);
  requirePassword(password);
  requireIterations(iterations, 'iterations');
  const pkcs8 = new Uint8Array(await subtle.exportKey('pkcs8', keyPair.privateKey));
  const { algorithm, ciphertext } = await pbes2Encrypt(password, pkcs8, iterations);
  return der.sequence(algorithm, der.octetString(ciphertext));
}

/** PEM "ENCRYPTED PRIVATE KEY" (PKCS#8, PBES2/AES-256-CBC) of keyPair.privateKey. */
export async function createEncryptedPrivateKeyPem(keyPair, password, iterations = DEFAULT_ITERATIONS) {
  return pemEncode('ENCRYPTED PRIVATE KEY', await encryptedPrivateKeyInfo(keyPair, password, iterations));
}

// ---------------------------------------------------------------------------
// PKCS#12 (RFC 7292)
// ---------------------------------------------------------------------------

async function sha256(data) {
  return new Uint8Array(await subtle.digest('SHA-256', data));
}

// Repeat bytes to fill v * ceil(len / v) bytes (empty stays empty).
function repeatToBlock(bytes, v) {
  const out = new Uint8Array(Math.ceil(bytes.length / v) * v);
  for (let i = 0; i < out.length; i++) out[i] = bytes[i % bytes.length];
  return out;
}

/** PKCS#12 key derivation (RFC 7292 B.2) with SHA-256 (u=32, v=64); password is the BMPString bytes incl. trailing 00 00. */
export async function pkcs12Kdf(passwordBytes, salt, id, iterations, n) {
  const u = 32;
  const v = 64;
  const D = new Uint8Array(v).fill(id);
  const I = concat(repeatToBlock(salt, v), repeatToBlock(passwordBytes, v));
  const out = [];
  for (let produced = 0; produced < n; produced += u) {
    let A = await sha256(concat(D, I));
    for (let r = 1; r < iterations; r++) A = await sha256(A);
    out.push(A);
    if (produced + u >= n) break;
    // I_j = (I_j + B + 1) mod 2^(8v) for each v-byte block, B = A repeated to v bytes.
    const B = repeatToBlock(A, v);
    for (let j = 0; j < I.length; j += v) {
      let carry = 1;
      for (let k = v - 1; k >= 0; k--) {
        const sum = I[j + k] + B[k] + carry;
        I[j + k] = sum & 0xff;
        carry = sum >> 8;
      }
    }
  }
  return concat(...out).subarray(0, n);
}

const contentInfo = (type, content) => der.sequence(der.oid(type), der.explicit(0, content));
const attribute = (type, value) => der.sequence(der.oid(type), der.setOf(value));
const safeBag = (type, value, attrs) =>
  der.sequence(der.oid(type), der.explicit(0, value), ...(attrs.length ? [der.setOf(...attrs)] : []));

/**
 * Build a DER PKCS#12 (PFX) holding the private key and certificates (leaf first),
 * laid out as OpenSSL 3 does: certs in a PBES2-encrypted SafeContents, key in a
 * pkcs8ShroudedKeyBag, HMAC-SHA-256 MAC. Returns Uint8Array.
 *
 * `iterations` (default 600000) is the PBKDF2 count of both PBES2 encryptions.
 * The MAC uses the PKCS#12 KDF with `macIterations` (default 2048, like
 * OpenSSL): WebCrypto only offers it as one async digest per round, which
 * makes large counts slow. Note the MAC is therefore the cheaper password
 * check for an attacker holding the file.
 */
export async function createPkcs12({
  keyPair,
  certificates,
  password,
  friendlyName,
  iterations = DEFAULT_ITERATIONS,
  macIterations = DEFAULT_MAC_ITERATIONS,
} = {}) {
  requireKeyPair(keyPair);
  requirePassword(password);
  requireIterations(iterations, 'iterations');
  requireIterations(macIterations, 'macIterations');
  if (!Array.isArray(certificates) || certificates.length === 0) throw new Error('certificates must be a non-empty array (leaf first)');
  if (!certificates.every((c) => c instanceof Uint8Array && c.length > 0)) throw new Error('each certificate must be a non-empty DER Uint8Array');
  if (friendlyName !== undefined && typeof friendlyName !== 'string') throw new Error('friendlyName must be a string');

  const leaf = certificates[0];
  // Cheap consistency check: a certificate embeds its SubjectPublicKeyInfo
  // verbatim, so the key's SPKI must occur inside the leaf's DER.
  const spki = new Uint8Array(await subtle.exportKey('spki', keyPair.publicKey));
  if (!containsBytes(leaf, spki)) throw new Error('the first certificate does not match the key pair');

  // localKeyId only pairs the key with its certificate; SHA-1 of the leaf is
  // what OpenSSL writes (not a security function here).
  const localKeyId = new Uint8Array(await subtle.digest('SHA-1', leaf));
  const attrs = [attribute(OID.localKeyId, der.octetString(localKeyId))];
  if (friendlyName) attrs.push(attribute(OID.friendlyName, der.bmpString(friendlyName)));

  const certBags = certificates.map((cert, i) =>
    safeBag(OID.certBag, der.sequence(der.oid(OID.x509Certificate), der.explicit(0, der.octetString(cert))), i === 0 ? attrs : []),
  );
  const certsPlain = der.sequence(...certBags);
  const certsEnc = await pbes2Encrypt(password, certsPlain, iterations);
  const encryptedData = der.sequence(
    der.integer(0),
    der.sequence(der.oid(OID.data), certsEnc.algorithm, der.implicit(0, der.octetString(certsEnc.ciphertext))),
  );

  const keyBag = safeBag(OID.pkcs8ShroudedKeyBag, await encryptedPrivateKeyInfo(keyPair, password, iterations), attrs);
  const keyContents = der.sequence(keyBag);

  const authSafe = der.sequence(
    contentInfo(OID.encryptedData, encryptedData),
    contentInfo(OID.data, der.octetString(keyContents)),
  );

  // MAC over the authSafe content octets, key from the PKCS#12 KDF (ID=3)
  // with the password as BMPString plus a 00 00 terminator.
  const macSalt = randomBytes(16);
  const macKeyBytes = await pkcs12Kdf(concat(utf16be(password), [0, 0]), macSalt, 3, macIterations, 32);
  const macKey = await subtle.importKey('raw', macKeyBytes, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = new Uint8Array(await subtle.sign('HMAC', macKey, authSafe));
  const macData = der.sequence(
    der.sequence(der.sequence(der.oid(OID.sha256), der.null()), der.octetString(mac)),
    der.octetString(macSalt),
    der.integer(macIterations),
  );

  return der.sequence(der.integer(3), contentInfo(OID.data, der.octetString(authSafe)), macData);
}

function containsBytes(haystack, needle) {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}
