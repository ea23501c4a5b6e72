// acquire.js — the acquisition pages' behaviour (電子証明書取得 → 取得開始 → 発行処理中 →
// install). The key is made here and never leaves the browser; only the CSR is sent.
import { generateKeyPair, createCsr, createPkcs12, createEncryptedPrivateKeyPem, pemEncode, pemDecodeAll } from './enroll.js';

const $ = (id) => document.getElementById(id);

// 取得前処理中: shown while the server checks the login ID and password.
const form = $('acquire-form');
if (form) {
  form.addEventListener('submit', () => {
    $('preprocessing').hidden = false;
    form.querySelector('button[type=submit]').disabled = true;
  });
}

const start = $('start');
if (start) {
  // The page's words, in its language (data attributes set by the server).
  const text = {
    passwordsDiffer: start.dataset.textPasswordsDiffer,
    passwordShort: start.dataset.textPasswordShort,
    failed: start.dataset.textFailed,
  };
  const ticket = start.dataset.ticket;
  const loginId = start.dataset.loginId;
  let keyPair = null;
  let issued = null;

  const heading = document.querySelector('h1');
  const startTitle = heading.textContent;
  const fail = (message) => {
    heading.textContent = startTitle;
    start.hidden = false;
    $('issuing').hidden = true;
    const box = $('issue-error');
    box.textContent = text.failed + message;
    box.hidden = false;
    $('start-issue').disabled = false;
  };

  const save = (name, bytes, type) => {
    const url = URL.createObjectURL(new Blob([bytes], { type }));
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  };

  $('start-issue').addEventListener('click', async () => {
    $('start-issue').disabled = true;
    $('issue-error').hidden = true;
    $('preprocessed').hidden = true;
    start.hidden = true;
    heading.textContent = start.dataset.titleIssuing;
    $('issuing').hidden = false;
    try {
      keyPair = await generateKeyPair($('key-type').value);
      const csr = await createCsr(keyPair, { commonName: loginId });
      const response = await fetch(`/api/v1/enrollments/${encodeURIComponent(ticket)}/csr`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ csr_pem: pemEncode('CERTIFICATE REQUEST', csr) }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        fail((body.error && body.error.message) || `HTTP ${response.status}`);
        return;
      }
      issued = body;
      $('cert-subject').textContent = body.subject;
      $('cert-serial').textContent = body.serial;
      $('cert-validity').textContent = `${body.not_before} — ${body.not_after}`;
      $('cert-fingerprint').textContent = body.sha256_fingerprint;
      heading.textContent = start.dataset.titleInstalled;
      $('issuing').hidden = true;
      $('installed').hidden = false;
    } catch (e) {
      fail(e.message);
    }
  });

  const password = () => {
    const p = $('p12_password').value;
    const error = $('p12-error');
    error.hidden = true;
    if (p.length < 8) {
      error.textContent = text.passwordShort;
    } else if (p !== $('p12_password_confirm').value) {
      error.textContent = text.passwordsDiffer;
    } else {
      return p;
    }
    error.hidden = false;
    return null;
  };

  const certificates = () => pemDecodeAll(issued.certificate_pem + issued.chain_pem).map((b) => b.der);

  $('p12-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const p = password();
    if (!p) return;
    const p12 = await createPkcs12({ keyPair, certificates: certificates(), password: p, friendlyName: loginId });
    save(`${loginId}.p12`, p12, 'application/x-pkcs12');
    fetch(`/api/v1/enrollments/${encodeURIComponent(ticket)}/installed`, { method: 'POST' }).catch(() => {});
  });

  $('download-key-pem').addEventListener('click', async () => {
    const p = password();
    if (!p) return;
    save(`${loginId}.key.pem`, await createEncryptedPrivateKeyPem(keyPair, p), 'application/x-pem-file');
  });

  $('download-cert-pem').addEventListener('click', () => {
    save(`${loginId}.crt.pem`, issued.certificate_pem + issued.chain_pem, 'application/x-pem-file');
  });
}
