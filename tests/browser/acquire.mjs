// The acquisition pipeline in headless Chromium (Debian's), driven by playwright-core:
// 電子証明書取得 → 取得前処理中 → 取得開始 → 発行処理中 → install (PKCS#12 saved) → 電子証明書ログイン
// with the saved PKCS#12 → home → トークン発行 → 認証確認 → logout → login with certificate,
// password and one-time password (codes from oathtool). Takes a screenshot of each page. Run by cli/tests/browser.rs,
// which starts `inkan serve` and checks the saved files with openssl and curl.
//
// The certificate login is Chromium's own TLS handshake, as a user's browser would do it: the
// saved PKCS#12 is imported with pk12util into the NSS database Chromium reads
// ($HOME/.pki/nssdb), and a fresh Chromium on a profile of its own presents it without asking,
// through the auto-selection setting that the AutoSelectCertificateForUrls policy sets (here in
// the profile's Preferences, so nothing outside the test's directory changes). Playwright's
// client-certificate option (Node doing the handshake, Chromium's certificate checks off) is
// not used, and Node is not given the test root: it could not talk TLS to the service at all.
//
// Environment: PUBLIC_URL, LOGIN_URL, LOGIN_ID, PASSWORD, P12_PASSWORD, OUT_DIR,
// HOME (with an NSS database trusting the test root). Prints one JSON line of results on stdout.
import { chromium } from 'playwright-core';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const publicUrl = env('PUBLIC_URL');
const loginUrl = env('LOGIN_URL');
const loginId = env('LOGIN_ID');
const password = env('PASSWORD');
const p12Password = env('P12_PASSWORD');
const out = env('OUT_DIR');
const home = env('HOME');
const shot = (page, name) => page.screenshot({ path: join(out, name), fullPage: true });
const timeout = 30_000;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const args = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// Runs a program without a shell, bounded in time; it must succeed.
const mustRun = (cmd, argv) => {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', timeout });
  if (r.error) throw r.error;
  assert.equal(r.status, 0, `${cmd} failed (${r.status}):\n${r.stdout}${r.stderr}`);
  return r.stdout + r.stderr;
};

// Every answer of the service with a 5xx status, from any page of any browser.
const serverErrors = [];
const watch = (page) => page.on('response', (r) => {
  if (r.status() >= 500) serverErrors.push(`${r.status()} ${r.request().method()} ${r.url()}`);
});

const browser = await chromium.launch({ executablePath, headless: true, timeout, args });
const results = {};
try {
  // No ignoreHTTPSErrors: Chromium must trust the server through the root in $HOME/.pki/nssdb.
  const context = await browser.newContext({ acceptDownloads: true, locale: 'ja-JP', viewport: { width: 1000, height: 900 } });
  context.setDefaultTimeout(timeout);
  const page = await context.newPage();
  watch(page);
  const consoleErrors = [];
  // Script errors count; "Failed to load resource" for the deliberate 401 above does not.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));

  // 電子証明書取得, in Japanese (Accept-Language ja) and English (?lang=en).
  await page.goto(`${publicUrl}/cert/acquire?lang=en`);
  assert.equal(await page.locator('h1').textContent(), 'Obtain a certificate');
  await shot(page, '02-acquire-en.png');
  await page.goto(`${publicUrl}/cert/acquire`);
  assert.equal(await page.locator('h1').textContent(), '電子証明書取得');
  await shot(page, '01-acquire.png');

  // A wrong password: the form comes back with the reason.
  await page.fill('input[name=login_id]', loginId);
  await page.fill('input[name=password]', 'not the password');
  await page.click('[data-testid=submit-acquire]');
  await page.waitForSelector('[data-testid=error]');
  results.wrongPasswordMessage = await page.locator('[data-testid=error]').textContent();
  await shot(page, '03-acquire-error.png');

  // 取得前処理中: the page shows it in its submit handler. Cancel that first submission after
  // the page's own handler ran (listeners run in order), look, then submit for real.
  await page.fill('input[name=login_id]', loginId);
  await page.fill('input[name=password]', password);
  await page.evaluate(() => {
    document.getElementById('acquire-form').addEventListener('submit', (e) => e.preventDefault(), { once: true });
  });
  await page.click('[data-testid=submit-acquire]');
  results.preprocessingShown = await page.locator('[data-testid=preprocessing]').isVisible();
  await shot(page, '04-preprocessing.png');
  await page.evaluate(() => document.getElementById('acquire-form').submit());
  await page.waitForSelector('[data-testid=start-issue]');

  assert.equal(await page.locator('h1').textContent(), '電子証明書取得開始');
  await shot(page, '05-start.png');

  // 発行処理中: the key is made here; hold the CSR's request to see the page say so.
  let csrSent = null;
  await page.route('**/api/v1/enrollments/*/csr', async (route) => {
    csrSent = JSON.parse(route.request().postData());
    await page.waitForSelector('[data-testid=issuing]', { state: 'visible' });
    await shot(page, '06-issuing.png');
    await route.continue();
  });
  await page.click('[data-testid=start-issue]');
  await page.waitForSelector('[data-testid=installed]', { state: 'visible' });
  assert.match(csrSent.csr_pem, /^-----BEGIN CERTIFICATE REQUEST-----/);
  assert.ok(!JSON.stringify(csrSent).includes('PRIVATE KEY'), 'only the CSR leaves the browser');
  results.csrPem = csrSent.csr_pem;
  results.serial = await page.locator('[data-testid=cert-serial]').textContent();
  results.subject = await page.locator('[data-testid=cert-subject]').textContent();
  await shot(page, '07-installed.png');

  // Passwords that differ are refused in the page.
  await page.fill('#p12_password', p12Password);
  await page.fill('#p12_password_confirm', p12Password + 'x');
  await page.click('[data-testid=download-p12]');
  await page.waitForSelector('#p12-error', { state: 'visible' });
  results.mismatchMessage = await page.locator('#p12-error').textContent();

  await page.fill('#p12_password_confirm', p12Password);
  const [p12] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=download-p12]')]);
  results.p12 = join(out, `${loginId}.p12`);
  await p12.saveAs(results.p12);
  const [pem] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=download-cert-pem]')]);
  results.certPem = join(out, `${loginId}.crt.pem`);
  await pem.saveAs(results.certPem);
  const [key] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=download-key-pem]')]);
  results.keyPem = join(out, `${loginId}.key.pem`);
  await key.saveAs(results.keyPem);
  assert.deepEqual(consoleErrors, [], 'no script errors on the acquisition pages');
  await context.close();

  // Without a certificate the login page explains what is missing. Chromium's NSS database
  // holds no client certificate yet, so it sends none (and has nothing to ask about).
  const noCert = await browser.newContext({ locale: 'ja-JP', viewport: { width: 1000, height: 700 } });
  const bare = await noCert.newPage();
  watch(bare);
  const response = await bare.goto(`${loginUrl}/`);
  results.noCertificateStatus = response.status();
  await shot(bare, '10-login-no-certificate.png');
  await noCert.close();
} finally {
  await browser.close();
}

// The user installs the saved PKCS#12 into the browser: pk12util imports key and chain into
// the NSS database Chromium reads (empty database password, the file's password).
const nssdb = `sql:${join(home, '.pki/nssdb')}`;
results.p12Import = mustRun('pk12util', ['-i', results.p12, '-d', nssdb, '-W', p12Password, '-K', '']);
assert.match(results.p12Import, /PKCS12 IMPORT SUCCESSFUL/);
results.nssCertificates = mustRun('certutil', ['-L', '-d', nssdb]);

// A profile that picks the certificate for the login origin by its issuer without asking:
// the per-profile form of the policy value
//   AutoSelectCertificateForUrls = ['{"pattern":"https://localhost:PORT","filter":{"ISSUER":{"CN":"..."}}}']
// (both fill Chromium's auto_select_certificate setting: a pattern, then {"filters": [...]}).
const issuerCn = new X509Certificate(fs.readFileSync(results.certPem)).issuer
  .split('\n').find((rdn) => rdn.startsWith('CN='))?.slice('CN='.length);
assert.ok(issuerCn, 'the certificate has an issuer CN');
const loginOrigin = new URL(loginUrl).origin;
results.autoSelect = { pattern: loginOrigin, filter: { ISSUER: { CN: issuerCn } } };
const profile = join(home, 'chromium-profile');
fs.mkdirSync(join(profile, 'Default'), { recursive: true });
fs.writeFileSync(join(profile, 'Default', 'Preferences'), JSON.stringify({
  profile: { content_settings: { exceptions: { auto_select_certificate: {
    [`${loginOrigin},*`]: { setting: { filters: [results.autoSelect.filter] } },
  } } } },
}));

// 電子証明書ログイン: Chromium presents the certificate from NSS in its own handshake, then the
// password; then the home page. Had it no certificate to pick, it would wait on its selection
// dialog and the page would not load.
const withCert = await chromium.launchPersistentContext(profile, {
  executablePath, headless: true, timeout, args, locale: 'ja-JP', viewport: { width: 1000, height: 900 },
});
try {
  withCert.setDefaultTimeout(timeout);
  const login = await withCert.newPage();
  watch(login);
  await login.goto(`${loginUrl}/`).catch((e) => {
    throw new Error(`Chromium did not complete the certificate login handshake (${e.message})`);
  });
  assert.equal(await login.locator('h1').textContent(), '電子証明書ログイン');
  results.loginCertificate = await login.locator('[data-testid=login-certificate]').textContent();
  await shot(login, '08-login.png');
  await login.fill('input[name=password]', password);
  await login.click('[data-testid=submit-login]');
  await login.waitForSelector('[data-testid=home-login-id]');
  results.homeLoginId = await login.locator('[data-testid=home-login-id]').textContent();
  results.homeCertificates = await login.locator('[data-testid=certificates]').textContent();
  await shot(login, '09-home.png');

  // トークン発行 → the QR code and 認証確認 with a code computed by oathtool from the page's
  // URI, as an authenticator app would; then log out and log in with certificate + password +
  // one-time password.
  await login.goto(`${loginUrl}/otp/token`);
  await shot(login, '11-otp-token.png');
  await login.fill('input[name=mail]', `${loginId}@example.jp`);
  await login.fill('input[name=activation_password]', '4321');
  await login.click('[data-testid=submit-otp-token]');
  await login.waitForSelector('[data-testid=otp-qr] svg');
  results.otpServiceId = await login.locator('[data-testid=otp-service-id]').textContent();
  const uri = await login.locator('[data-testid=otp-uri]').textContent();
  results.otpUriStart = uri.slice(0, uri.indexOf('?'));
  const secret = new URL(uri).searchParams.get('secret');
  await shot(login, '12-otp-qr.png');
  const code = (offset) => mustRun('oathtool', ['--totp', '-b', secret, '-N', `now + ${offset} sec`]).trim();
  await login.fill('[data-testid=otp-verify-code]', code(0));
  await login.click('[data-testid=submit-otp-verify]');
  await login.waitForSelector('[data-testid=home-login-id]');
  results.otpHomeState = await login.locator('[data-testid=otp-state]').textContent();
  results.userOtpState = await login.locator('[data-testid=otp-alice-01]').textContent();
  await shot(login, '13-home-otp.png');
  await login.click('form[action^="/logout"] button');
  await login.goto(`${loginUrl}/`);
  await login.fill('input[name=password]', password);
  await login.click('[data-testid=submit-login]');
  await login.waitForSelector('[data-testid=otp-form]');
  results.otpLoginTitle = await login.locator('h1').textContent();
  await shot(login, '14-login-otp.png');
  await login.fill('[data-testid=otp-code]', code(30));
  await login.click('[data-testid=submit-otp]');
  await login.waitForSelector('[data-testid=home-login-id]');
  results.otpLoggedIn = await login.locator('[data-testid=home-login-id]').textContent();
} finally {
  await withCert.close();
}
results.serverErrors = serverErrors;
process.stdout.write(JSON.stringify(results) + '\n');
