// The Terminal view's interactive terminals: xterm.js (vendored, under the strict CSP) on the
// attach WebSocket, on this daemon and, through the daemon's relay, on a peer: type, see the
// echo, detach, kill; screenshots of both.
import { config, launch, watch, check, shot, view, run } from './lib.mjs';

async function screenHas(page, text) {
  await page.waitForFunction((t) => (document.querySelector('#xterm-host .xterm-rows')?.textContent ?? '').includes(t), text);
}

async function newTerminal(page, name) {
  await page.fill('input[name=term-command]', 'sh');
  await page.fill('input[name=term-name]', name);
  await page.click('#term-new button[type=submit]');
  await page.waitForSelector('#xterm-host[data-attached]');
  await page.waitForSelector(`tr[data-terminal="${name}"]`);
  await page.click('#xterm-host');
}

await run(async () => {
  const { context, close } = await launch();
  const page = await context.newPage();
  const problems = watch(page);

  await page.goto(config.login);
  await page.waitForSelector('#view[data-ready="overview"]');
  await view(page, 'terminal');
  check((await page.$$('#terminal-tabs .tab')).length >= 2, 'a tab for this daemon and one for the peer');

  // This daemon: type and see the echo.
  await newTerminal(page, 'web');
  await page.keyboard.type('echo browser-$((6*7))');
  await page.keyboard.press('Enter');
  await screenHas(page, 'browser-42');
  check(await page.evaluate(() => document.adoptedStyleSheets.length > 0), "xterm.js's styles went through constructable sheets");
  await shot(page, 'terminal-interactive');

  // The peer, through the daemon's WebSocket relay.
  await page.click('#terminal-tabs .tab[data-target^="peer:"]');
  await page.waitForSelector('#terminal-list table');
  await newTerminal(page, 'remote');
  await page.keyboard.type('echo peer-$((2+3))');
  await page.keyboard.press('Enter');
  await screenHas(page, 'peer-5');
  await shot(page, 'terminal-peer');
  await page.click('#term-detach');
  await page.waitForSelector('#term-status:text("detached")');
  await page.click('tr[data-terminal="remote"] button.kill');
  await page.waitForFunction(() => !document.querySelector('tr[data-terminal="remote"]'));

  check(problems.length === 0, `no script errors or CSP violations: ${problems.join('; ')}`);
  await close();
});
