// Login with the one-time token, its single use, and what a stranger gets: no cookie, a
// foreign host name (DNS rebinding), another origin of the same site (CSRF).
import { config, launch, watch, check, shot, run } from './lib.mjs';

await run(async () => {
  const { context, close } = await launch(['--host-resolver-rules=MAP evil.test 127.0.0.1']);
  const page = await context.newPage();
  const problems = watch(page);

  await page.goto(config.login);
  await page.waitForSelector('#view[data-ready="overview"]');
  check(page.url() === `${config.base}/dashboard/`, `the token left the address bar: ${page.url()}`);
  const cookies = await context.cookies(config.base);
  const cookie = cookies.find((c) => c.name === `loopsy_dashboard_${config.port}`);
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict' && cookie.path === '/', `cookie: ${JSON.stringify(cookies)}`);
  check(!(await page.evaluate(() => document.cookie)).includes('loopsy_dashboard'), 'scripts cannot read the cookie');
  check((await page.evaluate(() => fetch('/api/v1/status').then((r) => r.status))) === 200, 'the cookie works');

  const reuse = await context.newPage();
  const again = await reuse.goto(config.login);
  check(again.status() === 403, `a used token is refused, got ${again.status()}`);
  check((await reuse.textContent('body')).includes('used already'), 'and says why');
  await reuse.close();

  await context.clearCookies();
  await page.goto(`${config.base}/dashboard/`);
  await page.waitForSelector('#logged-out');
  check((await page.evaluate(() => fetch('/api/v1/status').then((r) => r.status))) === 401, 'no cookie: 401');
  check((await page.evaluate(() => fetch('/api/v1/dashboard/overview').then((r) => r.status))) === 401, 'no cookie: 401');
  await shot(page, 'logged-out');

  // A name that resolves to this machine but is not its name: the login is refused.
  const rebound = await page.goto(`http://evil.test:${config.port}${config.rebindLogin}`);
  check(rebound.status() === 403, `foreign Host refused, got ${rebound.status()}`);
  await page.goto(`${config.base}${config.rebindLogin}`);
  await page.waitForSelector('#view[data-ready="overview"]');

  // Another origin on the same site (another daemon's port; a page there without the
  // dashboard's CSP) gets the cookie sent along, and is refused all the same.
  await page.goto(`${config.otherOrigin}/api/v1/health`);
  const outcome = await page.evaluate(async ({ base, marker }) => {
    const results = {};
    try {
      await fetch(`${base}/api/v1/execute/stream`, { method: 'POST', mode: 'no-cors', credentials: 'include', headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify({ command: 'touch', args: [marker] }) });
      results.simple = 'sent';
    } catch (err) { results.simple = `failed: ${err.message}`; }
    try {
      await fetch(`${base}/api/v1/context/cross-site`, { method: 'PUT', credentials: 'include', headers: { 'Content-Type': 'application/json', 'X-Loopsy-Dashboard': '1' }, body: '{"value":"x"}' });
      results.preflighted = 'read';
    } catch { results.preflighted = 'blocked'; }
    try {
      await (await fetch(`${base}/api/v1/status`, { credentials: 'include' })).json();
      results.read = 'read';
    } catch { results.read = 'blocked'; }
    return results;
  }, { base: config.base, marker: config.marker });
  check(outcome.preflighted === 'blocked' && outcome.read === 'blocked', `cross-origin reads are blocked: ${JSON.stringify(outcome)}`);
  check(problems.length === 0, `page problems: ${problems.join('; ')}`);
  await close();
});
