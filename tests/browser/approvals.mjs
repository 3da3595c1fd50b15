// The Approvals view: two requests wait (one on this daemon, one on its session w1, dispatched
// by tests/dashboard.rs to the stand-in Claude); the navigation's badge counts them on any view,
// the view lists both with their full input, Approve and Deny reach each, and the badge goes.
import { config, launch, watch, check, shot, view, run } from './lib.mjs';

await run(async () => {
  const { context, close } = await launch();
  const page = await context.newPage();
  const problems = watch(page);
  await page.goto(config.login);
  await page.waitForSelector('#view[data-ready="overview"]');
  await page.waitForSelector('#approvals-badge[data-count="2"]:not([hidden])');
  check((await page.textContent('#approvals-badge')) === '2', 'the badge counts both requests');
  await view(page, 'approvals');
  const rows = '#approvals-pending tr.approval-item[data-state="pending"]';
  await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 2, rows);
  const local = `${rows}[data-target="local"]`;
  const session = `${rows}[data-target="session:w1"]`;
  for (const row of [local, session]) {
    const text = await page.textContent(row);
    check(text.includes('Bash') && text.includes('"command": "echo hi > out.txt"'), `the row shows the tool and its input: ${text}`);
  }
  check((await page.textContent(session)).includes('session w1'), 'the session is named');
  check(!(await page.$('#approval-targets tr.approval-target[data-state="down"]')), 'no target is down');
  await shot(page, 'approvals');
  await page.click(`${local} button.approve`);
  await page.waitForSelector('#approvals-decided tr.approval-item[data-target="local"][data-state="approved"]');
  await page.waitForSelector('#approvals-badge[data-count="1"]');
  await page.click(`${session} button.deny`);
  await page.waitForSelector('#approvals-decided tr.approval-item[data-target="session:w1"][data-state="denied"]');
  await page.waitForSelector('#approvals-badge[data-count="0"][hidden]', { state: 'attached' });
  check(!(await page.$(rows)), 'nothing waits any more');
  const by = await page.textContent('#approvals-decided tr.approval-item[data-target="local"]');
  check(by.includes('(dashboard)'), `the decision says where it came from: ${by}`);
  await shot(page, 'approvals-decided');
  check(problems.length === 0, `page problems: ${problems.join('; ')}`);
  await close();
});
