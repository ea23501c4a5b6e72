// Tests for ../enroll.js. Run from the workspace root:
//   node --test enroll-server/assets/test/
// Output is judged by other implementations (OpenSSL CLI, NSS pk12util /
// certutil), not only by our own code. NSS checks are skipped only when
// pk12util/certutil are not installed (apt-get install libnss3-tools) and CI
// is not set: in CI (CI=true) missing NSS tools fail those tests.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  der,
  toHex,
  fromHex,
  toBase64,
  fromBase64,
  generateKeyPair,
  createCsr,
  createPkcs12,
  createEncryptedPrivateKeyPem,
  pemEncode,
  pemDecodeAll,
  pkcs12Kdf,
} from '../enroll.js';

const FAST_ITER = 1000; // PBKDF2 iterations for most tests (default tested once)

// Run a program with an argument array (no shell), bounded in time.
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000, ...opts });
  if (r.error) throw r.error;
  return r;
}

// Like run, but the program must succeed; returns stdout + stderr.
function ok(cmd, args, opts) {
  const r = run(cmd, args, opts);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stderr}`);
  return r.stdout + r.stderr;
}

function hasTool(name) {
  const r = spawnSync(name, ['-h'], { encoding: 'utf8', timeout: 10_000 });
  return !(r.error && r.error.code === 'ENOENT');
}
const HAVE_NSS = hasTool('pk12util') && hasTool('certutil');
// CI sets CI=true; an empty value, "false" or "0" is not CI.
const IN_CI = !['', 'false', '0'].includes((process.env.CI ?? '').trim().toLowerCase());
const NSS_MISSING = 'NSS tools (pk12util/certutil) not installed: apt-get install libnss3-tools';
// Skipped locally without the tools; in CI the test runs and fails on the first line.
const NSS_SKIP = !HAVE_NSS && !IN_CI && NSS_MISSING;

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'inkan-enroll-test-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let tmpCounter = 0;
function tmpDir(name) {
  const d = path.join(tmpRoot, `${name}-${tmpCounter++}`);
  fs.mkdirSync(d);
  return d;
}

const hex = (s) => fromHex(s);
// Password as BMPString (UTF-16BE) plus the 00 00 terminator, written
// independently of enroll.js for the KDF cross-check.
const concatBmp = (s) => {
  const units = [];
  for (let i = 0; i < s.length; i++) units.push(s.charCodeAt(i) >> 8, s.charCodeAt(i) & 0xff);
  return new Uint8Array([...units, 0, 0]);
};

// ---------------------------------------------------------------------------
// Throwaway CA (OpenSSL), shared by all tests
// ---------------------------------------------------------------------------

const caDir = tmpDir('ca');
const ca = {
  key: path.join(caDir, 'ca.key'),
  pem: path.join(caDir, 'ca.pem'),
  ext: path.join(caDir, 'leaf.ext'),
};
let caDer;

before(() => {
  ok('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', ca.key, '-out', ca.pem, '-subj', '/CN=inkan test CA', '-days', '1',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  fs.writeFileSync(
    ca.ext,
    [
      '[leaf]',
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=clientAuth',
      'subjectKeyIdentifier=hash',
      'authorityKeyIdentifier=keyid',
      '',
    ].join('\n'),
  );
  const blocks = pemDecodeAll(fs.readFileSync(ca.pem, 'utf8'));
  assert.equal(blocks.length, 1);
  caDer = blocks[0].der;
});

// Have OpenSSL issue a certificate for a (JS-made) DER CSR; returns DER.
function issue(csrDer, dir) {
  const csrPem = path.join(dir, 'csr.pem');
  const leafPem = path.join(dir, 'leaf.pem');
  fs.writeFileSync(csrPem, pemEncode('CERTIFICATE REQUEST', csrDer));
  ok('openssl', [
    'x509', '-req', '-in', csrPem, '-CA', ca.pem, '-CAkey', ca.key, '-set_serial', '0x' + toHex(crypto.getRandomValues(new Uint8Array(8))),
    '-days', '1', '-extfile', ca.ext, '-extensions', 'leaf', '-out', leafPem,
  ]);
  const blocks = pemDecodeAll(fs.readFileSync(leafPem, 'utf8'));
  assert.equal(blocks.length, 1);
  assert.equal(blocks[0].label, 'CERTIFICATE');
  return { der: blocks[0].der, pemPath: leafPem };
}

// ---------------------------------------------------------------------------
// DER writer
// ---------------------------------------------------------------------------

describe('der writer', () => {
  test('INTEGER minimal encodings', () => {
    const cases = [
      [0, '020100'],
      [127, '02017f'],
      [128, '02020080'],
      [255, '020200ff'],
      [256, '02020100'],
      [65537, '0203010001'],
      [2n ** 64n, '0209010000000000000000'],
      [hex('00000001'), '020101'], // redundant zeros dropped
      [hex('0080'), '02020080'], // one needed zero kept
      [hex('ff'), '020200ff'], // high bit -> 0x00 prefix, stays positive
      [hex('8000000000000000000000000000000000'), '0212008000000000000000000000000000000000'],
      [new Uint8Array(0), '020100'],
      [hex('0000'), '020100'],
    ];
    for (const [v, want] of cases) assert.equal(toHex(der.integer(v)), want, `integer(${v})`);
    assert.throws(() => der.integer(-1), /negative/);
    assert.throws(() => der.integer(1.5), /safe integer/);
  });

  test('lengths: short and long form', () => {
    const enc = (n) => toHex(der.octetString(new Uint8Array(n)).subarray(0, 5));
    assert.equal(enc(0).slice(0, 4), '0400');
    assert.equal(enc(127).slice(0, 4), '047f');
    assert.equal(enc(128).slice(0, 6), '048180');
    assert.equal(enc(255).slice(0, 6), '0481ff');
    assert.equal(enc(256).slice(0, 8), '04820100');
    assert.equal(enc(65535).slice(0, 8), '0482ffff');
    assert.equal(enc(65536).slice(0, 10), '0483010000');
    assert.equal(der.octetString(new Uint8Array(300)).length, 4 + 300);
  });

  test('OID encoding', () => {
    assert.equal(toHex(der.oid('1.2.840.113549.1.1.11')), '06092a864886f70d01010b');
    assert.equal(toHex(der.oid('2.5.4.3')), '0603550403');
    assert.equal(toHex(der.oid('1.2.840.10045.4.3.2')), '06082a8648ce3d040302');
    assert.equal(toHex(der.oid('2.999.3')), '0603883703'); // X.690 8.19.5 example
    assert.equal(toHex(der.oid('2.16.840.1.101.3.4.1.42')), '060960864801650304012a');
    for (const bad of ['', '1', '1.', '3.1', '1.40', '1.2.x', '1.02']) assert.throws(() => der.oid(bad), /invalid OID/, bad);
  });

  test('strings, NULL, BIT STRING, tags, SET OF order', () => {
    assert.equal(toHex(der.null()), '0500');
    assert.equal(toHex(der.utf8String('ä')), '0c02c3a4');
    assert.equal(toHex(der.bmpString('ä日')), '1e0400e465e5');
    assert.equal(toHex(der.printableString('Ab 1')), '130441622031');
    assert.throws(() => der.printableString('a@b'), /PrintableString/);
    assert.equal(toHex(der.bitString(hex('abcd'))), '030300abcd');
    assert.equal(toHex(der.sequence()), '3000');
    assert.equal(toHex(der.explicit(0, der.integer(1))), 'a003020101');
    assert.equal(toHex(der.explicit(3)), 'a300');
    assert.equal(toHex(der.implicit(0, der.octetString(hex('01')))), '800101');
    assert.equal(toHex(der.implicit(1, der.sequence(der.null()))), 'a1020500');
    // SET OF sorts by encoding; SET keeps the given order.
    assert.equal(toHex(der.setOf(der.integer(2), der.null(), der.integer(1))), '31080201010201020500');
    assert.equal(toHex(der.set(der.integer(2), der.integer(1))), '3106020102020101');
  });

  test('OpenSSL asn1parse reads what the writer produces', () => {
    const dir = tmpDir('asn1');
    const file = path.join(dir, 'x.der');
    fs.writeFileSync(
      file,
      der.sequence(
        der.integer(0),
        der.integer(128),
        der.integer(2n ** 64n),
        der.oid('1.2.840.113549.1.1.11'),
        der.null(),
        der.bmpString('päss'),
        der.utf8String('日本'),
        der.octetString(new Uint8Array(200).fill(7)),
        der.explicit(0, der.setOf(der.integer(5), der.integer(4))),
      ),
    );
    const out = ok('openssl', ['asn1parse', '-inform', 'DER', '-in', file]);
    assert.match(out, /INTEGER\s+:00\n/);
    assert.match(out, /INTEGER\s+:80\n/);
    assert.match(out, /INTEGER\s+:010000000000000000\n/);
    assert.match(out, /OBJECT\s+:sha256WithRSAEncryption/);
    assert.match(out, /NULL/);
    assert.match(out, /BMPSTRING/);
    assert.match(out, /UTF8STRING\s+:日本/);
    assert.match(out, /OCTET STRING\s+\[HEX DUMP\]:(07){200}/);
    assert.match(out, /cons: cont \[ 0 \]/);
    assert.match(out, /INTEGER\s+:04\n[^\n]*INTEGER\s+:05/); // SET OF sorted
  });

  test('hex, base64 and PEM helpers', () => {
    const bytes = crypto.getRandomValues(new Uint8Array(1000));
    assert.deepEqual(fromHex(toHex(bytes)), bytes);
    assert.deepEqual(fromBase64(toBase64(bytes)), bytes);
    assert.equal(toBase64(new TextEncoder().encode('inkan')), 'aW5rYW4=');
    assert.throws(() => fromHex('abc'), /hex/);
    const pem = pemEncode('TEST', bytes);
    const lines = pem.trimEnd().split('\n');
    assert.equal(lines[0], '-----BEGIN TEST-----');
    assert.equal(lines.at(-1), '-----END TEST-----');
    assert.ok(lines.slice(1, -2).every((l) => l.length === 64));
    assert.ok(lines.at(-2).length <= 64 && lines.at(-2).length > 0);
    const blocks = pemDecodeAll('junk\n' + pem + pemEncode('OTHER', hex('0102')).replace(/\n/g, '\r\n'));
    assert.equal(blocks.length, 2);
    assert.equal(blocks[0].label, 'TEST');
    assert.deepEqual(blocks[0].der, bytes);
    assert.equal(blocks[1].label, 'OTHER');
    assert.deepEqual(blocks[1].der, hex('0102'));
  });

  test('PKCS#12 KDF matches OpenSSL PKCS12KDF', async () => {
    // Long password (several 64-byte blocks) and n > 32 exercise the
    // block-addition step of RFC 7292 B.2.
    const cases = [
      { pass: 'correct horse', salt: hex('0102030405060708'), id: 3, iter: 2048, n: 32 },
      { pass: 'päss日本'.repeat(9), salt: crypto.getRandomValues(new Uint8Array(70)), id: 1, iter: 3, n: 100 },
    ];
    for (const c of cases) {
      const bmp = concatBmp(c.pass);
      const ours = await pkcs12Kdf(bmp, c.salt, c.id, c.iter, c.n);
      const theirs = ok('openssl', [
        'kdf', '-keylen', String(c.n), '-kdfopt', 'digest:SHA256', '-kdfopt', `hexpass:${toHex(bmp)}`,
        '-kdfopt', `hexsalt:${toHex(c.salt)}`, '-kdfopt', `iter:${c.iter}`, '-kdfopt', `id:${c.id}`, 'PKCS12KDF',
      ]);
      assert.equal(ours.length, c.n);
      assert.equal(toHex(ours), theirs.trim().replace(/:/g, '').toLowerCase());
    }
  });
});

// ---------------------------------------------------------------------------
// Key pairs, CSR, PKCS#12, encrypted key — per key kind
// ---------------------------------------------------------------------------

const KINDS = {
  'ecdsa-p256': { sigAlg: 'ecdsa-with-SHA256', keyText: [/Public Key Algorithm: id-ecPublicKey/, /NIST CURVE: P-256/] },
  'rsa-2048': {
    sigAlg: 'sha256WithRSAEncryption',
    keyText: [/Public Key Algorithm: rsaEncryption/, /Public-Key: \(2048 bit\)/, /Exponent: 65537 \(0x10001\)/],
  },
};

const PASSWORD = 'correct horse battery';
const UNICODE_PASSWORD = 'päss日本';

for (const [kind, expect] of Object.entries(KINDS)) {
  describe(`${kind}`, () => {
    let dir, keyPair, csrDer, leaf, spkiPem;

    before(async () => {
      dir = tmpDir(kind);
      keyPair = await generateKeyPair(kind);
      csrDer = await createCsr(keyPair, { commonName: `alice ${kind}` });
      leaf = issue(csrDer, dir);
      spkiPem = pemEncode('PUBLIC KEY', new Uint8Array(await crypto.subtle.exportKey('spki', keyPair.publicKey)));
    });

    // Write a PKCS#12 to a file and return its path.
    async function writeP12(name, password, extra = {}) {
      const file = path.join(dir, name);
      const p12 = await createPkcs12({
        keyPair,
        certificates: [leaf.der, caDer],
        password,
        friendlyName: `alice@inkan ${kind}`,
        iterations: FAST_ITER,
        ...extra,
      });
      assert.ok(p12 instanceof Uint8Array);
      fs.writeFileSync(file, p12);
      return file;
    }

    test('key pair is extractable with the requested algorithm', () => {
      assert.equal(keyPair.privateKey.extractable, true);
      assert.equal(keyPair.privateKey.algorithm.name, kind === 'rsa-2048' ? 'RSASSA-PKCS1-v1_5' : 'ECDSA');
    });

    test('CSR verifies with OpenSSL and has the right subject, key and signature algorithm', () => {
      const file = path.join(dir, 'csr.der');
      fs.writeFileSync(file, csrDer);
      const verify = ok('openssl', ['req', '-inform', 'DER', '-in', file, '-verify', '-noout']);
      assert.match(verify, /verify OK/i); // exit status alone proves nothing, see below
      assert.doesNotMatch(verify, /failure/i);
      const text = ok('openssl', ['req', '-inform', 'DER', '-in', file, '-noout', '-text']);
      assert.match(text, /Version: 1 \(0x0\)/);
      assert.match(text, new RegExp(`Subject: CN = alice ${kind}`));
      assert.match(text, new RegExp(`Signature Algorithm: ${expect.sigAlg}`));
      for (const re of expect.keyText) assert.match(text, re);
      // CN is a UTF8String, attributes are an empty [0].
      const asn1 = ok('openssl', ['asn1parse', '-inform', 'DER', '-in', file]);
      assert.match(asn1, new RegExp(`UTF8STRING\\s+:alice ${kind}`));
      assert.match(asn1, /cont \[ 0 \]/);
      // Public key in the CSR is ours.
      const pub = ok('openssl', ['req', '-inform', 'DER', '-in', file, '-noout', '-pubkey']);
      assert.equal(pemDecodeAll(pub)[0].label, 'PUBLIC KEY');
      assert.deepEqual(pemDecodeAll(pub)[0].der, pemDecodeAll(spkiPem)[0].der);
    });

    test('CSR with a corrupted signature is rejected by OpenSSL', () => {
      const bad = Uint8Array.from(csrDer);
      bad[bad.length - 5] ^= 0x01; // inside the signature value
      const file = path.join(dir, 'bad-csr.der');
      fs.writeFileSync(file, bad);
      // OpenSSL 3.0 `req -verify` exits 0 even when the signature is bad, so
      // judge by its message rather than the exit status.
      const r = run('openssl', ['req', '-inform', 'DER', '-in', file, '-verify', '-noout']);
      assert.match(r.stdout + r.stderr, /verify failure/i);
      assert.doesNotMatch(r.stdout + r.stderr, /verify OK/i);
    });

    test('PKCS#12: OpenSSL verifies the MAC and reports PBES2/AES-256-CBC + HMAC-SHA256', async () => {
      const file = await writeP12('info.p12', PASSWORD);
      const info = ok('openssl', ['pkcs12', '-in', file, '-info', '-noout', '-passin', `pass:${PASSWORD}`]);
      assert.match(info, /MAC: sha256, Iteration 2048/);
      assert.match(info, /MAC length: 32, salt length: 16/);
      assert.match(info, new RegExp(`PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration ${FAST_ITER}, PRF hmacWithSHA256`));
      assert.match(info, new RegExp(`Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration ${FAST_ITER}, PRF hmacWithSHA256`));
      assert.equal(info.match(/Certificate bag/g).length, 2);
    });

    test('PKCS#12: OpenSSL extracts both certificates and the matching key', async () => {
      const file = await writeP12('extract.p12', PASSWORD);
      const out = ok('openssl', ['pkcs12', '-in', file, '-nodes', '-passin', `pass:${PASSWORD}`]);
      const blocks = pemDecodeAll(out);
      const certs = blocks.filter((b) => b.label === 'CERTIFICATE').map((b) => toHex(b.der));
      const keys = blocks.filter((b) => b.label === 'PRIVATE KEY');
      assert.deepEqual(certs.sort(), [toHex(leaf.der), toHex(caDer)].sort());
      assert.equal(keys.length, 1);
      // Key and leaf share localKeyID and friendlyName.
      assert.equal(out.match(/localKeyID: [0-9A-F ]+/g).length, 2);
      assert.equal(new Set(out.match(/localKeyID: [0-9A-F ]+/g)).size, 1);
      assert.equal(out.match(new RegExp(`friendlyName: alice@inkan ${kind}`, 'g')).length, 2);
      // Extracted private key's public half == certificate's public key.
      const keyFile = path.join(dir, 'extracted.key');
      fs.writeFileSync(keyFile, pemEncode('PRIVATE KEY', keys[0].der));
      const fromKey = ok('openssl', ['pkey', '-in', keyFile, '-pubout']);
      const fromCert = ok('openssl', ['x509', '-in', leaf.pemPath, '-noout', '-pubkey']);
      assert.deepEqual(pemDecodeAll(fromKey)[0].der, pemDecodeAll(fromCert)[0].der);
      assert.deepEqual(pemDecodeAll(fromKey)[0].der, pemDecodeAll(spkiPem)[0].der);
    });

    test('PKCS#12: wrong password is rejected by OpenSSL', async () => {
      const file = await writeP12('wrong.p12', PASSWORD);
      const r = run('openssl', ['pkcs12', '-in', file, '-info', '-noout', '-passin', 'pass:not the password']);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /mac verify/i);
    });

    test('PKCS#12: non-ASCII password works with OpenSSL', async () => {
      const file = await writeP12('unicode.p12', UNICODE_PASSWORD);
      const out = ok('openssl', ['pkcs12', '-in', file, '-nodes', '-passin', `pass:${UNICODE_PASSWORD}`]);
      assert.equal(pemDecodeAll(out).filter((b) => b.label === 'PRIVATE KEY').length, 1);
      const r = run('openssl', ['pkcs12', '-in', file, '-info', '-noout', '-passin', 'pass:pass日本']);
      assert.notEqual(r.status, 0, 'a different password must fail');
    });

    for (const [label, password] of [['ASCII', PASSWORD], ['non-ASCII', UNICODE_PASSWORD]]) {
      test(`PKCS#12: NSS pk12util imports it (${label} password)`, { skip: NSS_SKIP }, async () => {
        assert.ok(HAVE_NSS, `${NSS_MISSING} (CI is set: NSS checks may not be skipped)`);
        const file = await writeP12(`nss-${label}.p12`, password);
        const db = `sql:${tmpDir(`nssdb-${kind}`)}`;
        ok('certutil', ['-N', '-d', db, '--empty-password']);
        const imp = ok('pk12util', ['-i', file, '-d', db, '-W', password, '-K', '']);
        assert.match(imp, /PKCS12 IMPORT SUCCESSFUL/);
        const list = ok('certutil', ['-L', '-d', db]);
        assert.match(list, new RegExp(`alice@inkan ${kind}\\s+u,u,u`)); // u = has private key
        assert.match(list, /inkan test CA/);
        const keys = ok('certutil', ['-K', '-d', db]);
        assert.match(keys, new RegExp(`${kind === 'rsa-2048' ? 'rsa' : 'ec'}\\s+[0-9a-f]+\\s+alice@inkan ${kind}`));
        // The imported leaf is byte-identical.
        const exported = run('certutil', ['-L', '-d', db, '-n', `alice@inkan ${kind}`, '-r'], { encoding: 'buffer' });
        assert.equal(exported.status, 0);
        assert.deepEqual(new Uint8Array(exported.stdout), leaf.der);
        // Wrong password fails.
        const db2 = `sql:${tmpDir(`nssdb-${kind}`)}`;
        ok('certutil', ['-N', '-d', db2, '--empty-password']);
        const bad = run('pk12util', ['-i', file, '-d', db2, '-W', 'not the password', '-K', '']);
        assert.notEqual(bad.status, 0);
      });
    }

    test('encrypted private key PEM decrypts with OpenSSL', async () => {
      const pem = await createEncryptedPrivateKeyPem(keyPair, UNICODE_PASSWORD, FAST_ITER);
      assert.match(pem, /^-----BEGIN ENCRYPTED PRIVATE KEY-----\n/);
      const file = path.join(dir, 'k.pem');
      fs.writeFileSync(file, pem);
      const pub = ok('openssl', ['pkey', '-in', file, '-passin', `pass:${UNICODE_PASSWORD}`, '-pubout']);
      assert.deepEqual(pemDecodeAll(pub)[0].der, pemDecodeAll(spkiPem)[0].der);
      const asn1 = ok('openssl', ['asn1parse', '-in', file]);
      for (const alg of ['PBES2', 'PBKDF2', 'hmacWithSHA256', 'aes-256-cbc']) assert.match(asn1, new RegExp(`:${alg}`));
      const r = run('openssl', ['pkey', '-in', file, '-passin', 'pass:wrong', '-noout']);
      assert.notEqual(r.status, 0);
    });
  });
}

// ---------------------------------------------------------------------------
// Defaults and argument checking
// ---------------------------------------------------------------------------

describe('defaults and errors', () => {
  let keyPair, leafDer;
  before(async () => {
    keyPair = await generateKeyPair();
    leafDer = issue(await createCsr(keyPair, { commonName: 'bob' }), tmpDir('defaults')).der;
  });

  test('default key kind is ECDSA P-256', () => {
    assert.equal(keyPair.privateKey.algorithm.name, 'ECDSA');
    assert.equal(keyPair.privateKey.algorithm.namedCurve, 'P-256');
  });

  test('default PKCS#12 iterations (600000) are used and readable by OpenSSL', async () => {
    const t0 = performance.now();
    const p12 = await createPkcs12({ keyPair, certificates: [leafDer], password: PASSWORD });
    const ms = performance.now() - t0;
    const file = path.join(tmpDir('default-iter'), 'd.p12');
    fs.writeFileSync(file, p12);
    const info = ok('openssl', ['pkcs12', '-in', file, '-info', '-noout', '-passin', `pass:${PASSWORD}`]);
    assert.match(info, /PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 600000, PRF hmacWithSHA256/);
    assert.match(info, /Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 600000, PRF hmacWithSHA256/);
    assert.ok(ms < 10_000, `creating the default PKCS#12 took ${Math.round(ms)} ms`);
    // No friendlyName given: the bags carry only localKeyID.
    const out = ok('openssl', ['pkcs12', '-in', file, '-nodes', '-passin', `pass:${PASSWORD}`]);
    assert.doesNotMatch(out, /friendlyName/);
    assert.equal(out.match(/localKeyID/g).length, 2);
  });

  test('bad arguments are refused with clear errors', async () => {
    await assert.rejects(generateKeyPair('dsa-1024'), /unknown key kind "dsa-1024"/);
    await assert.rejects(createCsr(keyPair, {}), /commonName/);
    await assert.rejects(createCsr(keyPair, { commonName: 'x'.repeat(65) }), /at most 64/);
    await assert.rejects(createCsr({}, { commonName: 'x' }), /keyPair/);
    const base = { keyPair, certificates: [leafDer], password: PASSWORD, iterations: FAST_ITER };
    await assert.rejects(createPkcs12({ ...base, password: '' }), /password/);
    await assert.rejects(createPkcs12({ ...base, password: undefined }), /password/);
    await assert.rejects(createPkcs12({ ...base, certificates: [] }), /certificates/);
    await assert.rejects(createPkcs12({ ...base, certificates: undefined }), /certificates/);
    await assert.rejects(createPkcs12({ ...base, certificates: ['not der'] }), /certificate/);
    await assert.rejects(createPkcs12({ ...base, certificates: [caDer] }), /does not match the key/);
    await assert.rejects(createPkcs12({ ...base, iterations: 0 }), /iterations/);
    await assert.rejects(createEncryptedPrivateKeyPem(keyPair, '', FAST_ITER), /password/);
  });
});
