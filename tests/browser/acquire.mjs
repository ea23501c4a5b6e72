// The acquisition pipeline in headless Chromium (Debian's), driven by playwright-core:
// 電子証明書取得 → 取得前処理中 → 取得開始 → 発行処理中 → install (PKCS#12 saved) → 電子証明書ログイン
// with the saved PKCS#12 → home. Takes a screenshot of each page. Run by cli/tests/browser.rs,
// which starts `inkan serve` and checks the saved file with openssl and curl.
//
// Environment: PUBLIC_URL, LOGIN_URL, LOGIN_ID, PASSWORD, P12_PASSWORD, OUT_DIR,
// HOME (with an NSS database trusting the test root), NODE_EXTRA_CA_CERTS (the test root,
// for playwright's client-certificate proxy). Prints one JSON line of results on stdout.
import { chromium } from 'playwright-core';
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
const shot = (page, name) => page.screenshot({ path: join(out, name), fullPage: true });
const timeout = 30_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  timeout,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const results = {};
try {
  // No ignoreHTTPSErrors: Chromium must trust the server through the root in $HOME/.pki/nssdb.
  const context = await browser.newContext({ acceptDownloads: true, locale: 'ja-JP', viewport: { width: 1000, height: 900 } });
  context.setDefaultTimeout(timeout);
  const page = await context.newPage();
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

  // 電子証明書ログイン with the PKCS#12 just saved, then the home page.
  const withCert = await browser.newContext({
    locale: 'ja-JP',
    viewport: { width: 1000, height: 900 },
    clientCertificates: [{ origin: loginUrl, pfxPath: results.p12, passphrase: p12Password }],
  });
  withCert.setDefaultTimeout(timeout);
  const login = await withCert.newPage();
  await login.goto(`${loginUrl}/`);
  assert.equal(await login.locator('h1').textContent(), '電子証明書ログイン');
  results.loginCertificate = await login.locator('[data-testid=login-certificate]').textContent();
  await shot(login, '08-login.png');
  await login.fill('input[name=password]', password);
  await login.click('[data-testid=submit-login]');
  await login.waitForSelector('[data-testid=home-login-id]');
  results.homeLoginId = await login.locator('[data-testid=home-login-id]').textContent();
  results.homeCertificates = await login.locator('[data-testid=certificates]').textContent();
  await shot(login, '09-home.png');
  await withCert.close();

  // Without a certificate the login page explains what is missing.
  const noCert = await browser.newContext({ locale: 'ja-JP', viewport: { width: 1000, height: 700 } });
  const bare = await noCert.newPage();
  const response = await bare.goto(`${loginUrl}/`);
  results.noCertificateStatus = response.status();
  await shot(bare, '10-login-no-certificate.png');
  await noCert.close();
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(results) + '\n');
