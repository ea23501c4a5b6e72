// API連携認証 (OAuth 2.0, FAPI 2.0 style) end to end: a third-party app ("kakeibo") played by
// openid-client (panva's, OpenID-certified) pushes its authorization request (PAR, PKCE S256),
// authenticates with its own inkan-issued certificate in the TLS handshake (RFC 8705
// tls_client_auth) and gets certificate-bound tokens; the user does its part in Debian's
// Chromium: login with the certificate Chromium presents itself (or login ID + password for a
// client that allows it), the one-time password (codes from oathtool), 追加認証 (the secret
// question, asked on a new device), 認可業務選択, 照会用暗証番号登録 and 情報アクセス許可; then the
// token endpoint, refresh, introspection, the protected resource (GET /api/v1/me), revocation,
// 連携解除 on the home page, and hostile input at every step. Takes a screenshot of each page.
// Run by cli/tests/oauth.rs, which starts `inkan serve`, registers the clients, the resource and
// the user's OTP token and secret question, and asserts on the results.
//
// TLS as it is for real: Chromium trusts the test root and holds the user's key through the NSS
// database in $HOME/.pki/nssdb, and picks the certificate for the login origin through the
// auto-selection setting in its profile's Preferences (as acquire.mjs does; no
// ignoreHTTPSErrors, no Playwright client certificates). A second NSS database ($BARE_HOME)
// trusts the root and holds no key: a browser without a certificate. Node's side of the app
// talks TLS through undici Agents that trust only the test root and present the app's
// certificate; they are openid-client's customFetch.
//
// The run, in order: discovery; hostile PARs, authorize URLs and endpoint calls (no browser);
// flow A (every page, a wrong PIN, allowed; then tokens, refresh, introspection, the resource,
// revocation, the code replayed); flow B (same browser: no question, the PIN registered, an
// unticked 許可 and a forged POST refused, then 拒否); flow C (allowed, then 連携解除 on the home
// page); an expired code and a wrong PKCE verifier (two more allowed flows); flow F (a browser
// without a certificate: login ID + password for the other app, and the kakeibo app's
// certificate_required page); last, wrong answers on a new device until the account locks.
// Flows A, B and C are the first user's; the expired code, the wrong verifier, F and the lock
// are a second user's (each token takes one code per 30-second step: two users wait half as
// long).
//
// Environment:
//   LOGIN_URL            the certificate-login listener, https://localhost:PORT (= the issuer)
//   ROOT_CA              the test root certificate (PEM): what Node trusts
//   USER_CERT            the user's certificate (PEM): its issuer CN picks it in Chromium
//   KAKEIBO_CLIENT_ID, KAKEIBO_CERT, KAKEIBO_KEY, KAKEIBO_REDIRECT_URI
//                        the registered app: certificate login only, scopes certificates:read
//                        and balance:read (PEM certificate chain and key)
//   OTHER_CLIENT_ID, OTHER_CERT, OTHER_KEY, OTHER_REDIRECT_URI
//                        another registered app (another inkan certificate): scope
//                        certificates:read, --allow-password-login
//   LOGIN_ID, PASSWORD   the user (a master whose contract has the resource)
//   OTP_SECRET           the user's active TOTP token (base32, as in its otpauth URI)
//   OTP_LAST_STEP        the last 30-second step the test used a code of (each step works once)
//   SECOND_LOGIN_ID, SECOND_PASSWORD, SECOND_OTP_SECRET, SECOND_OTP_LAST_STEP, SECOND_CERT,
//   SECOND_HOME          the same for the second user (another master, the same question and
//                        answer), whose NSS database is at SECOND_HOME
//   RESOURCE_ID, RESOURCE_PIN, WRONG_PIN   the resource of the user's contract and its PIN
//   SECRET_ANSWER, WRONG_ANSWER            the answer to the user's secret question, and not
//   OUT_DIR              where the screenshots go (oauth-NN-*.png)
//   HOME                 with an NSS database: the test root and the user's key
//   BARE_HOME            with an NSS database: the test root only
// Prints one JSON line of results on stdout (what each key means: cli/tests/oauth.rs).
//
// ASSUMPTIONS (where spec.md leaves room; to reconcile with the server):
// - Every page's title is its <h1>; an error page has [data-testid=error] and no form. Error
//   pages carry no error code, so the results carry the page's status and message and the
//   Rust test checks the message (e.g. ロックされています for account_locked).
// - The resources page: checkboxes start unticked (the test ticks the resource explicitly).
// - A wrong PIN, a refused unticked consent and a refused wrong-csrf POST do not end the flow:
//   the page comes again and the user can go on (flow A goes on after a wrong PIN, flow B
//   denies after the unticked and the forged POST).
// - A wrong PIN does not count towards the account lock (so it is no recent_failures signal,
//   and flow B, on the device and network flow A used, is not asked the question).
// - Answers are compared after trimming spaces: flow A types the answer with spaces around it.
// - A code used twice: invalid_grant, and the access and refresh tokens of its first use are
//   revoked (flow A revokes the access token got by refreshing before, to see that revoking
//   an access token ends it alone).
// - A PAR redirect_uri that is not registered: 400 with invalid_request or
//   invalid_redirect_uri (spec.md names both); the Rust side accepts either.
// - The certificate_required error page: 400 per spec.md (the existing ErrorCode maps it to
//   401); the Rust side accepts either with the no-certificate message.
// - The home page (GET /home) may need its own certificate login (password, OTP) after a flow:
//   the flow's login is not assumed to start a home session.
// - The grant that 連携解除 ends is found through GET /api/v1/grants (same session) as the
//   newest of the kakeibo client's grants, right after flow C granted it.
// - The redirect to the app is seen, not intercepted: Playwright's route handlers see only the
//   first request of a redirect chain (the consent POST), never the 303's target, so the
//   browser's own request event gives the callback URL, and the host-resolver rule makes the
//   navigation there fail at once (no DNS query leaves the machine).
// - Flow F's question: the fresh profile is a new device, so 追加認証 is asked there too.
// - One-time passwords: the service takes the previous, current and next 30-second steps,
//   each step once and only in increasing order (as enroll-server/src/otp.rs does today).
import { chromium } from 'playwright-core';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch, request } from 'undici';
import { spawnSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const loginUrl = env('LOGIN_URL');
const loginOrigin = new URL(loginUrl).origin;
const rootPem = fs.readFileSync(env('ROOT_CA'));
const kakeibo = {
  id: env('KAKEIBO_CLIENT_ID'),
  cert: fs.readFileSync(env('KAKEIBO_CERT')),
  key: fs.readFileSync(env('KAKEIBO_KEY')),
  redirectUri: env('KAKEIBO_REDIRECT_URI'),
};
const other = {
  id: env('OTHER_CLIENT_ID'),
  cert: fs.readFileSync(env('OTHER_CERT')),
  key: fs.readFileSync(env('OTHER_KEY')),
  redirectUri: env('OTHER_REDIRECT_URI'),
};
// The two users: login ID, password, TOTP secret, the last step used, NSS home, certificate.
const first = {
  loginId: env('LOGIN_ID'), password: env('PASSWORD'), otpSecret: env('OTP_SECRET'),
  lastStep: Number(env('OTP_LAST_STEP')), home: env('HOME'), cert: fs.readFileSync(env('USER_CERT')),
};
const second = {
  loginId: env('SECOND_LOGIN_ID'), password: env('SECOND_PASSWORD'), otpSecret: env('SECOND_OTP_SECRET'),
  lastStep: Number(env('SECOND_OTP_LAST_STEP')), home: env('SECOND_HOME'), cert: fs.readFileSync(env('SECOND_CERT')),
};
const resourceId = env('RESOURCE_ID');
const resourcePin = env('RESOURCE_PIN');
const wrongPin = env('WRONG_PIN');
const secretAnswer = env('SECRET_ANSWER');
const wrongAnswer = env('WRONG_ANSWER');
const out = env('OUT_DIR');
const bareHome = env('BARE_HOME');
const timeout = 30_000;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const args = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // No name but localhost resolves: the apps' redirect URIs (whose hosts do not exist) fail
  // at once, and no DNS query leaves the machine.
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost',
];
const bothScopes = 'certificates:read balance:read';

// The whole run is bounded: past this, the process ends (Playwright's exit handler kills the
// browsers it launched) and the Rust test reports it.
setTimeout(() => {
  process.stderr.write('oauth.mjs: not finished within 420 s\n');
  process.exit(3);
}, 420_000).unref();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const shot = (page, name) => page.screenshot({ path: join(out, name), fullPage: true });

// Runs a program without a shell, bounded in time; it must succeed. Returns its stdout.
const mustRun = (cmd, argv) => {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', timeout });
  if (r.error) throw r.error;
  assert.equal(r.status, 0, `${cmd} failed (${r.status}):\n${r.stdout}${r.stderr}`);
  return r.stdout;
};

// A one-time password of `user`'s token as an authenticator app computes it (oathtool), for a
// 30-second step the service has not seen yet and still takes when the form arrives. It takes the previous,
// current and next steps, each once, in increasing order: so the next unused of those, the
// previous only while half of the current step is left; else wait for the next step.
const stepSecs = 30;
async function nextCode(user) {
  for (;;) {
    const now = Date.now() / 1000;
    const current = Math.floor(now / stepSecs);
    const earliest = now % stepSecs < stepSecs / 2 ? current - 1 : current;
    const step = Math.max(user.lastStep + 1, earliest);
    if (step <= current + 1) {
      user.lastStep = step;
      const code = mustRun('oathtool', ['--totp', '-b', user.otpSecret, '-N', `@${step * stepSecs}`]).trim();
      assert.match(code, /^\d{6}$/);
      return code;
    }
    await sleep((step - 1) * stepSecs * 1000 - Date.now() + 300);
  }
}

// Every answer with a 5xx status: from any page of any browser, and from the app's requests.
const serverErrors = [];
// Every request a browser made anywhere but the service and the two redirect URIs.
const foreignRequests = [];
// Every request a browser made to an app's redirect URI.
const callbacks = [];
// Everything secret the run handled (tokens, codes, verifiers): the Rust test checks that
// none of it is in the audit trail or the service's log.
const secrets = new Set();
const keep = (...values) => values.filter((v) => typeof v === 'string' && v).forEach((v) => secrets.add(v));

// ---- the app's side: undici Agents as openid-client's fetch --------------------------------

// An Agent trusting only the test root and presenting `who`'s certificate (none: no
// certificate). Bounded: every request has a 15 s limit.
const agents = [];
const agentFor = (who) => {
  const agent = new Agent({
    connect: { ca: rootPem, ...(who ? { cert: who.cert, key: who.key } : {}), timeout: 15_000 },
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
  });
  agents.push(agent);
  return agent;
};
const kakeiboAgent = agentFor(kakeibo);
const otherAgent = agentFor(other);
const bareAgent = agentFor(null);

// openid-client's customFetch: undici's fetch through `agent`, noting 5xx answers.
const fetchThrough = (agent) => async (url, options) => {
  const response = await undiciFetch(url, { ...options, dispatcher: agent });
  if (response.status >= 500) serverErrors.push(`${response.status} ${options.method} ${url} (app)`);
  return response;
};

// The app's configuration: RFC 8414 discovery (/.well-known/oauth-authorization-server, issuer
// checked), tls_client_auth, the app's certificate in every request.
const configFor = (who, agent) => client.discovery(new URL(loginUrl), who.id, undefined, client.TlsClientAuth(), {
  algorithm: 'oauth2',
  [client.customFetch]: fetchThrough(agent),
  timeout: 15,
});

// A raw request with undici (no redirect followed): status, headers, body text and JSON.
async function raw(url, { agent = bareAgent, method = 'GET', form, headers = {} } = {}) {
  const init = { dispatcher: agent, method, headers: { ...headers }, headersTimeout: 15_000, bodyTimeout: 15_000 };
  if (form) {
    init.headers['content-type'] = 'application/x-www-form-urlencoded';
    init.body = new URLSearchParams(form).toString();
  }
  const r = await request(url, init);
  const text = await r.body.text();
  if (r.statusCode >= 500) serverErrors.push(`${r.statusCode} ${method} ${url} (raw)`);
  let json = null;
  try { json = JSON.parse(text); } catch { /* an HTML page */ }
  const header = (name) => {
    const v = r.headers[name];
    return Array.isArray(v) ? v[0] : v ?? null;
  };
  return { status: r.statusCode, header, text, json };
}

// Whether a Location header stays on the service (absent, a path, or the login origin).
const inside = (location) => location === null
  || (location.startsWith('/') && !location.startsWith('//'))
  || location.startsWith(`${loginOrigin}/`);

// What an openid-client call came to: { ok: true, value } or how it was refused (the OAuth
// error code from a response body, an authorization response or a WWW-Authenticate challenge).
async function attempt(promise) {
  try {
    return { ok: true, value: await promise };
  } catch (err) {
    return {
      ok: false,
      name: err?.name ?? null,
      error: err?.error ?? err?.cause?.[0]?.parameters?.error ?? null,
      status: err?.status ?? null,
      message: String(err?.message ?? err),
    };
  }
}
// The same without the value (which may hold tokens), for the results.
const refusal = (outcome) => (outcome.ok ? { ok: true } : { ...outcome });

// A new authorization request, pushed (PAR): PKCE S256 and state; returns the URL for the
// browser and what the app keeps.
async function pushRequest(config, who, scope) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const url = await client.buildAuthorizationUrlWithPAR(config, {
    redirect_uri: who.redirectUri,
    scope,
    state,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  });
  keep(verifier);
  return { url, verifier, state };
}

// The token response without its tokens.
const tokenSummary = (t) => ({
  tokenType: t.token_type,
  expiresIn: t.expires_in,
  scope: t.scope ?? null,
  accessToken: typeof t.access_token === 'string' && t.access_token.length > 0,
  refreshToken: typeof t.refresh_token === 'string' && t.refresh_token.length > 0,
  authorizationDetails: t.authorization_details ?? null,
});

// GET /api/v1/me with `token` as `config`'s app (its certificate in the handshake).
async function me(config, token) {
  const outcome = await attempt(client.fetchProtectedResource(config, token, new URL(`${loginUrl}/api/v1/me`), 'GET'));
  if (!outcome.ok) return { status: outcome.status, error: outcome.error, loginId: null };
  const response = outcome.value;
  const body = await response.json().catch(() => null);
  return { status: response.status, error: null, loginId: body?.login_id ?? null };
}

// Whether introspection by `config`'s app finds `token` active.
const active = async (config, token) => (await client.tokenIntrospection(config, token)).active;

// The callback's parameters, the code left out.
const callbackParams = (url, expectedState) => {
  const params = new URL(url).searchParams;
  keep(params.get('code'));
  return {
    keys: [...params.keys()].sort(),
    iss: params.get('iss'),
    stateMatches: params.get('state') === expectedState,
    error: params.get('error'),
    hasCode: params.has('code'),
  };
};

// ---- the user's side: Chromium ----------------------------------------------------------------

const isCallback = (href) => [kakeibo.redirectUri, other.redirectUri].some((r) => href.startsWith(`${r}?`));

// A Chromium on a persistent profile of its own: with `user`'s certificate (the NSS database
// in the user's home, picked for the login origin without asking) or, for no user, without any
// (BARE_HOME's).
async function openBrowser(profileName, { user }) {
  const base = user ? user.home : bareHome;
  const profile = join(base, profileName);
  fs.mkdirSync(join(profile, 'Default'), { recursive: true });
  if (user) {
    // The per-profile form of AutoSelectCertificateForUrls, as in acquire.mjs.
    const issuerCn = new X509Certificate(user.cert).issuer
      .split('\n').find((rdn) => rdn.startsWith('CN='))?.slice('CN='.length);
    assert.ok(issuerCn, 'the user certificate has an issuer CN');
    fs.writeFileSync(join(profile, 'Default', 'Preferences'), JSON.stringify({
      profile: { content_settings: { exceptions: { auto_select_certificate: {
        [`${loginOrigin},*`]: { setting: { filters: [{ ISSUER: { CN: issuerCn } }] } },
      } } } },
    }));
  }
  const context = await chromium.launchPersistentContext(profile, {
    executablePath, headless: true, timeout, args, locale: 'ja-JP', viewport: { width: 1000, height: 900 },
    env: { ...process.env, HOME: base },
  });
  context.setDefaultTimeout(timeout);
  const page = context.pages()[0] ?? await context.newPage();
  page.on('response', (r) => {
    if (r.status() >= 500) serverErrors.push(`${r.status()} ${r.request().method()} ${r.url()}`);
  });
  page.on('request', (r) => {
    const url = r.url();
    if (isCallback(url)) callbacks.push(url);
    else if (!url.startsWith(`${loginOrigin}/`) && !/^(about|data|blob):/.test(url)) foreignRequests.push(url);
  });
  page.on('dialog', (d) => d.accept());
  return { context, page };
}

const squash = (s) => (s ?? '').replace(/\s+/g, ' ').trim();
const title = async (page) => squash(await page.locator('h1').first().textContent());
const textOf = async (page, selector) => {
  const found = page.locator(selector);
  return (await found.count()) ? squash(await found.first().textContent()) : null;
};
const textsOf = async (page, selector) => (await page.locator(selector).allTextContents()).map(squash);
const errorOf = (page) => textOf(page, '[data-testid=error]');

// Fails with what the page says when it is not the one expected.
async function expectTitle(page, expected, what) {
  const got = await title(page);
  if (got !== expected) {
    throw new Error(`${what}: expected 「${expected}」, got 「${got}」 at ${page.url()}; error: ${await errorOf(page)}`);
  }
}

// Clicks `selector` and waits for the page it leads to; returns that page's response.
async function submit(page, selector) {
  const [response] = await Promise.all([page.waitForNavigation(), page.click(selector)]);
  return response;
}

// API連携認証（利用登録） → ワンタイムパスワード認証 → 追加認証 when it is asked (answered with
// `answer`, unless it is null: then the page is left as it is). With `typeLoginId`, the login
// ID is typed (no certificate). `shots` names screenshots of the pages on the way.
async function signIn(page, url, { user = first, typeLoginId = false, answer = secretAnswer, shots = {} } = {}) {
  const seen = {};
  const response = await page.goto(url.href);
  seen.status = response?.status() ?? null;
  await expectTitle(page, 'API連携認証（利用登録）', 'the flow page');
  seen.clientName = await textOf(page, '[data-testid=client-name]');
  seen.clientCompany = await textOf(page, '[data-testid=client-company]');
  seen.termsShown = (await page.locator('[data-testid=terms]').count()) > 0;
  seen.certificateLogin = await textOf(page, '[data-testid=login-certificate]');
  seen.loginIdField = (await page.locator('[data-testid=login-form] input[name=login_id]').count()) > 0;
  if (shots.login) await shot(page, shots.login);
  if (typeLoginId) await page.fill('[data-testid=login-form] input[name=login_id]', user.loginId);
  await page.fill('[data-testid=login-form] input[name=password]', user.password);
  await submit(page, '[data-testid=submit-login]');
  await expectTitle(page, 'ワンタイムパスワード認証', 'after the password');
  if (shots.otp) await shot(page, shots.otp);
  await page.fill('input[name=code]', await nextCode(user));
  await submit(page, '[data-testid=submit-otp]');
  seen.questionAsked = (await title(page)) === '追加認証';
  seen.question = seen.questionAsked ? await textOf(page, '[data-testid=question]') : null;
  if (seen.questionAsked && answer !== null) {
    if (shots.question) await shot(page, shots.question);
    await page.fill('input[name=answer]', answer);
    await submit(page, '[data-testid=submit-answer]');
    seen.afterAnswer = await title(page);
  }
  return seen;
}

// 認可業務選択 with every requested scope kept.
async function keepScopes(page) {
  await expectTitle(page, '認可業務選択', 'the scope choice');
  for (const box of await page.locator('input[name=scope]').all()) await box.check();
  await submit(page, '[data-testid=submit-scopes]');
}

// 照会用暗証番号登録 with the resource ticked (its PIN typed when the page asks for it).
async function chooseResource(page, pin) {
  await expectTitle(page, '照会用暗証番号登録', 'the PIN page');
  await page.check(`input[name=resource][value="${resourceId}"]`);
  if (pin !== null) await page.fill(`input[name="pin_${resourceId}"]`, pin);
  return submit(page, '[data-testid=submit-resources]');
}

// 情報アクセス許可: what it shows.
async function readConsent(page) {
  await expectTitle(page, '情報アクセス許可', 'the consent page');
  return {
    clientName: await textOf(page, '[data-testid=client-name]'),
    clientCompany: await textOf(page, '[data-testid=client-company]'),
    scopes: await textsOf(page, 'li[data-testid=scope]'),
    resources: await textsOf(page, 'li[data-testid=resource]'),
    period: await textOf(page, '[data-testid=period]'),
    explanation: await textOf(page, '[data-testid=explanation]'),
    allowLabel: await textOf(page, 'button[name=decision][value=allow]'),
    denyLabel: await textOf(page, 'button[name=decision][value=deny]'),
    allowDisabledBefore: await page.locator('button[name=decision][value=allow]').isDisabled(),
  };
}

// Clicks `selector` (許可 or 拒否), which must send the browser to the app's redirect URI;
// returns that URL, as the browser requested it. The redirect is seen, not intercepted: a
// route handler sees only the first request of a redirect chain (the POST), so the request
// event gives the redirect's target, whose name does not resolve (the navigation fails there,
// on Chromium's error page).
async function toApp(page, selector, what) {
  let sent = null;
  const seen = (r) => {
    if (sent === null && r.isNavigationRequest() && isCallback(r.url())) sent = r.url();
  };
  page.on('request', seen);
  try {
    await Promise.all([page.waitForNavigation().catch(() => null), page.click(selector)]);
    // The navigation to the app fails (its host does not resolve here) and Chromium commits its
    // error page a moment later: wait for it, so that it does not cut the next navigation.
    for (let i = 0; i < 50 && sent !== null && !page.url().startsWith('chrome-error:'); i += 1) await sleep(100);
  } finally {
    page.off('request', seen);
  }
  assert.ok(sent, `${what} should send the browser to the app's redirect URI, not ${page.url()}: ${await errorOf(page)}`);
  return sent;
}

// Ticks 認可手続きを継続する and clicks 許可; returns the callback URL the browser was sent to.
async function allow(page) {
  await page.check('input[name=continue]');
  return toApp(page, 'button[name=decision][value=allow]', '許可');
}

// A whole allowed flow of `user` for the kakeibo app with one scope (no choice page, no PIN
// page).
async function allowedFlow(page, config, user) {
  const pushed = await pushRequest(config, kakeibo, 'certificates:read');
  const login = await signIn(page, pushed.url, { user });
  await readConsent(page);
  const callback = await allow(page);
  return { pushed, login, callback };
}

const results = {};
let allowedFlows = 0;
const browsers = [];
try {
  // ---- discovery and the pushed-request endpoint ----------------------------------------------
  const config = await configFor(kakeibo, kakeiboAgent);
  const otherConfig = await configFor(other, otherAgent);
  const meta = config.serverMetadata();
  results.metadata = Object.fromEntries([
    'issuer', 'authorization_endpoint', 'token_endpoint', 'pushed_authorization_request_endpoint',
    'require_pushed_authorization_requests', 'introspection_endpoint', 'revocation_endpoint',
    'response_types_supported', 'grant_types_supported', 'code_challenge_methods_supported',
    'token_endpoint_auth_methods_supported', 'tls_client_certificate_bound_access_tokens',
    'authorization_response_iss_parameter_supported', 'scopes_supported',
  ].map((k) => [k, meta[k] ?? null]));

  // A well-formed PAR first (the baseline the hostile ones differ from by one thing each).
  const parUrl = meta.pushed_authorization_request_endpoint;
  const verifier = client.randomPKCECodeVerifier();
  const good = {
    response_type: 'code',
    client_id: kakeibo.id,
    redirect_uri: kakeibo.redirectUri,
    scope: bothScopes,
    state: client.randomState(),
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  };
  const par = async (changes, agent = kakeiboAgent) => {
    const form = { ...good, ...changes };
    for (const [k, v] of Object.entries(form)) if (v === undefined) delete form[k];
    const r = await raw(parUrl, { agent, method: 'POST', form });
    return { status: r.status, error: r.json?.error ?? null, requestUri: typeof r.json?.request_uri === 'string' };
  };
  const baseline = await raw(parUrl, { agent: kakeiboAgent, method: 'POST', form: good });
  results.parBaseline = {
    status: baseline.status,
    requestUriPrefix: baseline.json?.request_uri?.startsWith('urn:ietf:params:oauth:request_uri:') ?? false,
    expiresIn: baseline.json?.expires_in ?? null,
    cacheControl: baseline.header('cache-control'),
  };
  const lastChar = kakeibo.redirectUri.slice(-1);
  results.par = {
    noChallenge: await par({ code_challenge: undefined, code_challenge_method: undefined }),
    plain: await par({ code_challenge: verifier, code_challenge_method: 'plain' }),
    noMethod: await par({ code_challenge_method: undefined }),
    redirectOneChar: await par({ redirect_uri: kakeibo.redirectUri.slice(0, -1) + (lastChar === 'x' ? 'y' : 'x') }),
    unknownScope: await par({ scope: 'certificates:read admin:write' }),
    jar: await par({ request: 'eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.' }),
    unknownClient: await par({ client_id: 'no-such-client' }),
    wrongCertificate: await par({}, otherAgent),
    noCertificate: await par({}, bareAgent),
  };

  // Open redirects: /oauth/authorize never sends anyone outside the service.
  const authorizeUrl = meta.authorization_endpoint;
  const where = async (url) => {
    const r = await raw(url.toString());
    return { status: r.status, location: r.header('location'), inside: inside(r.header('location')) };
  };
  const evil = 'https://evil.example/cb';
  const bogus = new URL(authorizeUrl);
  bogus.search = new URLSearchParams({
    client_id: kakeibo.id, request_uri: 'urn:ietf:params:oauth:request_uri:bogus', redirect_uri: evil, state: 'x',
  }).toString();
  const withoutPar = new URL(authorizeUrl);
  withoutPar.search = new URLSearchParams({ ...good, redirect_uri: evil }).toString();
  const mismatched = (await pushRequest(config, kakeibo, 'certificates:read')).url;
  mismatched.searchParams.set('client_id', other.id);
  const extra = (await pushRequest(config, kakeibo, 'certificates:read')).url;
  extra.searchParams.set('redirect_uri', evil);
  results.authorize = {
    bogusRequestUri: await where(bogus),
    withoutPar: await where(withoutPar),
    mismatchedClient: await where(mismatched),
    extraRedirectUri: await where(extra),
  };

  // Token, introspection and revocation endpoints without a certificate, and what no grant has.
  const tokenUrl = meta.token_endpoint;
  const noCertToken = await raw(tokenUrl, {
    method: 'POST', form: { grant_type: 'refresh_token', refresh_token: 'not-a-token', client_id: kakeibo.id },
  });
  results.tokenNoCertificate = { status: noCertToken.status, error: noCertToken.json?.error ?? null };
  const noCertIntrospect = await raw(meta.introspection_endpoint, {
    method: 'POST', form: { token: 'not-a-token', client_id: kakeibo.id },
  });
  results.introspectNoCertificate = { status: noCertIntrospect.status, error: noCertIntrospect.json?.error ?? null };
  const revokeUnknown = await raw(meta.revocation_endpoint, {
    agent: kakeiboAgent, method: 'POST', form: { token: 'not-a-token-at-all', client_id: kakeibo.id },
  });
  results.revokeUnknown = { status: revokeUnknown.status };
  results.unsupportedGrant = refusal(await attempt(client.genericGrantRequest(config, 'urn:example:no-such-grant', {})));

  // ---- flow A: certificate login, every page, allowed; then the tokens ---------------------
  const main = await openBrowser('profile-main', { user: first });
  browsers.push(main.context);
  const page = main.page;
  const a = {};
  results.flowA = a;
  const reqA = await pushRequest(config, kakeibo, bothScopes);
  a.login = await signIn(page, reqA.url, {
    answer: `  ${secretAnswer} `,
    shots: { login: 'oauth-01-login.png', otp: 'oauth-02-otp.png', question: 'oauth-03-question.png' },
  });

  // 認可業務選択: both scopes offered and ticked; none ticked is refused.
  await expectTitle(page, '認可業務選択', 'flow A, the scope choice');
  a.scopes = {
    offered: await page.locator('input[name=scope]').evaluateAll((boxes) => boxes.map((b) => b.value)),
    initiallyChecked: await page.locator('input[name=scope]').evaluateAll((boxes) => boxes.every((b) => b.checked)),
  };
  await shot(page, 'oauth-04-scopes.png');
  for (const box of await page.locator('input[name=scope]').all()) await box.uncheck();
  a.scopes.noneStatus = (await submit(page, '[data-testid=submit-scopes]'))?.status() ?? null;
  a.scopes.noneTitle = await title(page);
  a.scopes.noneError = await errorOf(page);
  await shot(page, 'oauth-05-scopes-none.png');
  await keepScopes(page);

  // 照会用暗証番号登録: none chosen is refused; a wrong PIN is refused and registers nothing;
  // then the right one.
  await expectTitle(page, '照会用暗証番号登録', 'flow A, the PIN page');
  a.pins = {
    rows: await page.locator('tr[data-resource]').count(),
    label: await textOf(page, `tr[data-resource="${resourceId}"]`),
    pinField: (await page.locator(`input[name="pin_${resourceId}"]`).count()) > 0,
  };
  await shot(page, 'oauth-06-pins.png');
  await page.uncheck(`input[name=resource][value="${resourceId}"]`);
  a.pins.noneStatus = (await submit(page, '[data-testid=submit-resources]'))?.status() ?? null;
  a.pins.noneError = await errorOf(page);
  a.pins.wrongStatus = (await chooseResource(page, wrongPin))?.status() ?? null;
  a.pins.wrongTitle = await title(page);
  a.pins.wrongError = await errorOf(page);
  a.pins.pinFieldAfterWrong = (await page.locator(`input[name="pin_${resourceId}"]`).count()) > 0;
  a.pins.registeredAfterWrong = (await page.locator(`[data-testid="registered-${resourceId}"]`).count()) > 0;
  await shot(page, 'oauth-07-pins-wrong.png');
  await chooseResource(page, resourcePin);

  // 情報アクセス許可: 許可 is disabled until 認可手続きを継続する is ticked.
  a.consent = await readConsent(page);
  await shot(page, 'oauth-08-consent.png');
  const box = page.getByLabel('認可手続きを継続する');
  a.consent.continueName = await box.getAttribute('name');
  await box.check();
  a.consent.allowEnabledAfter = await page.locator('button[name=decision][value=allow]').isEnabled();
  await shot(page, 'oauth-09-consent-ticked.png');
  const callbackA = await toApp(page, 'button[name=decision][value=allow]', 'flow A, 許可');
  allowedFlows += 1;
  a.callback = callbackParams(callbackA, reqA.state);

  // The request_uri again in the browser: refused with an error page, no redirect.
  const again = await page.goto(reqA.url.href);
  a.requestUriReused = {
    status: again?.status() ?? null,
    stayed: new URL(page.url()).pathname === reqA.url.pathname && again?.request().redirectedFrom() === null,
    error: await errorOf(page),
  };
  await shot(page, 'oauth-10-request-uri-reused.png');

  // The code for tokens (openid-client checks state and iss, and sends the verifier).
  const tokensA = await client.authorizationCodeGrant(config, new URL(callbackA), {
    pkceCodeVerifier: reqA.verifier, expectedState: reqA.state,
  });
  keep(tokensA.access_token, tokensA.refresh_token);
  a.token = tokenSummary(tokensA);
  const refreshed = await client.refreshTokenGrant(config, tokensA.refresh_token);
  keep(refreshed.access_token, refreshed.refresh_token);
  a.refresh = { ...tokenSummary(refreshed), newAccessToken: refreshed.access_token !== tokensA.access_token };

  // Introspection: active, scope, the login ID, the certificate binding, the resource.
  a.introspectAccess = await client.tokenIntrospection(config, tokensA.access_token);
  a.introspectRefresh = await client.tokenIntrospection(config, tokensA.refresh_token);
  a.expectedX5t = createHash('sha256').update(new X509Certificate(kakeibo.cert).raw).digest('base64url');
  a.introspectByOther = await client.tokenIntrospection(otherConfig, tokensA.access_token);
  a.refreshByOther = refusal(await attempt(client.refreshTokenGrant(otherConfig, tokensA.refresh_token)));

  // The protected resource: with the app's certificate, another app's, none, or a made-up token.
  a.me = await me(config, tokensA.access_token);
  a.meOtherCertificate = await me(otherConfig, tokensA.access_token);
  const meUrl = `${loginUrl}/api/v1/me`;
  const bare = await raw(meUrl, { headers: { authorization: `Bearer ${tokensA.access_token}` } });
  a.meNoCertificate = { status: bare.status, wwwAuthenticate: bare.header('www-authenticate') };
  const madeUp = await raw(meUrl, { agent: kakeiboAgent, headers: { authorization: 'Bearer made-up-token' } });
  a.meMadeUpToken = { status: madeUp.status, wwwAuthenticate: madeUp.header('www-authenticate') };

  // Revocation of the refreshed access token: it alone ends.
  await client.tokenRevocation(config, refreshed.access_token);
  a.revoked = {
    active: await active(config, refreshed.access_token),
    me: (await me(config, refreshed.access_token)).status,
    firstAccessActive: await active(config, tokensA.access_token),
    refreshActive: await active(config, tokensA.refresh_token),
  };

  // The code a second time: refused, and the tokens of its first use are revoked.
  const reuse = await attempt(client.authorizationCodeGrant(config, new URL(callbackA), {
    pkceCodeVerifier: reqA.verifier, expectedState: reqA.state,
  }));
  a.codeReuse = {
    ...refusal(reuse),
    accessActive: await active(config, tokensA.access_token),
    refreshActive: await active(config, tokensA.refresh_token),
    refresh: refusal(await attempt(client.refreshTokenGrant(config, tokensA.refresh_token))),
  };

  // ---- flow B: same browser, no question, the PIN registered; refused consents; denied -----
  const b = {};
  results.flowB = b;
  const reqB = await pushRequest(config, kakeibo, bothScopes);
  b.login = await signIn(page, reqB.url, { answer: null });
  await keepScopes(page);
  await expectTitle(page, '照会用暗証番号登録', 'flow B, the PIN page');
  b.pins = {
    registered: await textOf(page, `[data-testid="registered-${resourceId}"]`),
    pinField: (await page.locator(`input[name="pin_${resourceId}"]`).count()) > 0,
  };
  await shot(page, 'oauth-11-pins-registered.png');
  await chooseResource(page, null);
  b.consent = await readConsent(page);

  // 許可 without the tick, the button enabled by hand: the server refuses it.
  await page.evaluate(() => document.querySelector('button[name=decision][value=allow]').removeAttribute('disabled'));
  b.unticked = { status: (await submit(page, 'button[name=decision][value=allow]'))?.status() ?? null };
  b.unticked.title = await title(page);
  b.unticked.error = await errorOf(page);
  b.unticked.url = page.url();
  await shot(page, 'oauth-12-consent-unticked.png');

  // A forged POST (wrong csrf) from the page's own origin, with the flow's cookie.
  b.csrf = await page.evaluate(async () => {
    const form = document.querySelector('input[name=csrf]').form;
    const body = new URLSearchParams({ csrf: 'forged-csrf-value-0123456789', continue: 'on', decision: 'allow' });
    const r = await fetch(form.action, { method: 'POST', body, redirect: 'manual', credentials: 'same-origin' });
    return { status: r.status, type: r.type };
  });

  // The same page in English (the language link keeps the flow), then 拒否 from there.
  await page.goto(`${loginUrl}/oauth/flow?lang=en`);
  b.english = {
    title: await title(page),
    allow: await textOf(page, 'button[name=decision][value=allow]'),
    continueLabel: await textOf(page, 'label.check'),
  };
  await shot(page, 'oauth-12b-consent-en.png');

  // 拒否 with nothing ticked.
  const callbackB = await toApp(page, 'button[name=decision][value=deny]', 'flow B, 拒否');
  b.callback = callbackParams(callbackB, reqB.state);
  b.grant = refusal(await attempt(client.authorizationCodeGrant(config, new URL(callbackB), {
    pkceCodeVerifier: reqB.verifier, expectedState: reqB.state,
  })));

  // ---- flow C: allowed; 連携解除 on the home page ends it -----------------------------------
  const c = {};
  results.flowC = c;
  const reqC = await pushRequest(config, kakeibo, bothScopes);
  c.login = await signIn(page, reqC.url, { answer: null });
  await keepScopes(page);
  await chooseResource(page, null);
  await readConsent(page);
  const callbackC = await allow(page);
  allowedFlows += 1;
  keep(new URL(callbackC).searchParams.get('code'));
  const tokensC = await client.authorizationCodeGrant(config, new URL(callbackC), {
    pkceCodeVerifier: reqC.verifier, expectedState: reqC.state,
  });
  keep(tokensC.access_token, tokensC.refresh_token);
  c.meBefore = await me(config, tokensC.access_token);

  // The home page, logging in there (certificate, password, OTP) when it asks to.
  await page.goto(`${loginUrl}/home`);
  c.homeNeededLogin = (await page.locator('[data-testid=home-login-id]').count()) === 0;
  if (c.homeNeededLogin) {
    await expectTitle(page, '電子証明書ログイン', 'the home login');
    await page.fill('input[name=password]', first.password);
    await submit(page, '[data-testid=submit-login]');
    if (await page.locator('[data-testid=otp-form]').count()) {
      await page.fill('[data-testid=otp-code]', await nextCode(first));
      await submit(page, '[data-testid=submit-otp]');
    }
    await page.waitForSelector('[data-testid=home-login-id]');
  }
  const grants = await page.evaluate(async () => (await fetch('/api/v1/grants', { credentials: 'same-origin' })).json());
  const mine = grants.grants.filter((g) => g.client_id === kakeibo.id)
    .sort((x, y) => Date.parse(y.granted_at) - Date.parse(x.granted_at));
  c.grant = mine[0] ?? null;
  assert.ok(c.grant, `no grant of the kakeibo app in ${JSON.stringify(grants)}`);
  c.grantRow = await textOf(page, `tr[data-grant="${c.grant.id}"]`);
  c.endLabel = await textOf(page, `[data-testid="end-grant-${c.grant.id}"]`);
  await shot(page, 'oauth-13-home-grants.png');
  c.endStatus = (await submit(page, `[data-testid="end-grant-${c.grant.id}"]`))?.status() ?? null;
  c.rowAfterEnd = (await page.locator(`tr[data-grant="${c.grant.id}"]`).count()) > 0;
  await shot(page, 'oauth-14-home-grant-ended.png');
  c.refreshAfterEnd = refusal(await attempt(client.refreshTokenGrant(config, tokensC.refresh_token)));
  c.accessActiveAfterEnd = await active(config, tokensC.access_token);
  c.meAfterEnd = await me(config, tokensC.access_token);

  await main.context.close();

  // ---- codes that do not work: an expired one, a wrong PKCE verifier ------------------------
  // The second user, on a device of hers: the question the first time, not the second.
  const secondBrowser = await openBrowser('profile-second', { user: second });
  browsers.push(secondBrowser.context);
  const expired = await allowedFlow(secondBrowser.page, config, second);
  allowedFlows += 1;
  keep(new URL(expired.callback).searchParams.get('code'));
  await sleep(3_000);
  results.expiredCode = {
    questionAsked: expired.login.questionAsked,
    ...refusal(await attempt(client.authorizationCodeGrant(config, new URL(expired.callback), {
      pkceCodeVerifier: expired.pushed.verifier, expectedState: expired.pushed.state,
    }))),
  };
  const wrongVerifier = await allowedFlow(secondBrowser.page, config, second);
  allowedFlows += 1;
  keep(new URL(wrongVerifier.callback).searchParams.get('code'));
  results.wrongVerifier = {
    questionAsked: wrongVerifier.login.questionAsked,
    ...refusal(await attempt(client.authorizationCodeGrant(config, new URL(wrongVerifier.callback), {
      pkceCodeVerifier: client.randomPKCECodeVerifier(), expectedState: wrongVerifier.pushed.state,
    }))),
  };
  await secondBrowser.context.close();

  // ---- flow F: no certificate; login ID + password for the app that allows it -------------
  const bareBrowser = await openBrowser('profile-bare', { user: null });
  browsers.push(bareBrowser.context);
  const f = {};
  results.passwordLogin = f;
  const reqF = await pushRequest(otherConfig, other, 'certificates:read');
  f.login = await signIn(bareBrowser.page, reqF.url, {
    user: second, typeLoginId: true, shots: { login: 'oauth-15-password-login.png' },
  });
  f.consent = await readConsent(bareBrowser.page);
  await shot(bareBrowser.page, 'oauth-16-password-consent.png');
  const callbackF = await allow(bareBrowser.page);
  allowedFlows += 1;
  f.callback = callbackParams(callbackF, reqF.state);
  const tokensF = await client.authorizationCodeGrant(otherConfig, new URL(callbackF), {
    pkceCodeVerifier: reqF.verifier, expectedState: reqF.state,
  });
  keep(tokensF.access_token, tokensF.refresh_token);
  f.token = tokenSummary(tokensF);
  f.introspect = await client.tokenIntrospection(otherConfig, tokensF.access_token);
  f.introspectByKakeibo = await client.tokenIntrospection(config, tokensF.access_token);
  f.me = await me(otherConfig, tokensF.access_token);
  f.meKakeiboCertificate = await me(config, tokensF.access_token);

  // The kakeibo app does not allow password login: without a certificate, an error page.
  const reqNoCert = await pushRequest(config, kakeibo, 'certificates:read');
  const noCert = await bareBrowser.page.goto(reqNoCert.url.href);
  results.certificateRequired = {
    status: noCert?.status() ?? null,
    error: await errorOf(bareBrowser.page),
    loginForm: (await bareBrowser.page.locator('[data-testid=login-form]').count()) > 0,
  };
  await shot(bareBrowser.page, 'oauth-17-certificate-required.png');
  await bareBrowser.context.close();

  // ---- last: wrong answers on a new device until the account locks ---------------------------
  const lockBrowser = await openBrowser('profile-lock', { user: second });
  browsers.push(lockBrowser.context);
  const lp = lockBrowser.page;
  const lock = { wrongErrors: [], wrongAnswers: 0 };
  results.lock = lock;
  const reqE = await pushRequest(config, kakeibo, 'certificates:read');
  lock.login = await signIn(lp, reqE.url, { user: second, answer: null });
  assert.ok(lock.login.questionAsked, 'a new device is asked the secret question');
  // The flow ends on the service's error page (a redirect to the app would fail to load: the
  // request to the app is what shows it).
  const sentToApp = () => callbacks.some((url) => new URL(url).searchParams.get('state') === reqE.state);
  for (let i = 1; i <= 10; i += 1) {
    await lp.fill('input[name=answer]', wrongAnswer);
    const [response] = await Promise.all([lp.waitForNavigation().catch(() => null), lp.click('[data-testid=submit-answer]')]);
    lock.wrongAnswers = i;
    lock.redirected = sentToApp();
    if (lock.redirected) break;
    if (i === 1) await shot(lp, 'oauth-18-question-wrong.png');
    if (await lp.locator('input[name=answer]').count()) {
      lock.wrongErrors.push(await errorOf(lp));
      continue;
    }
    lock.status = response?.status() ?? null;
    lock.title = await title(lp);
    lock.error = await errorOf(lp);
    break;
  }
  await shot(lp, 'oauth-19-locked.png');
  await lockBrowser.context.close();
} catch (err) {
  process.stderr.write(`partial results: ${JSON.stringify(results)}\n`);
  throw err;
} finally {
  for (const context of browsers) await context.close().catch(() => {});
  for (const agent of agents) await agent.close().catch(() => {});
}
results.allowedFlows = allowedFlows;
results.foreignRequests = foreignRequests;
results.serverErrors = serverErrors;
results.secrets = [...secrets];
process.stdout.write(JSON.stringify(results) + '\n');
