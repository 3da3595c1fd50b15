// AI tasks in the browser: dispatch to the stand-in Claude (tests/agents/claude, prompt word
// "tool": it asks to run a Bash command), see the approval request live, approve it, and see
// the task finish. Run only when the daemon has the AI task routes (see tests/dashboard.rs).
import { config, launch, watch, check, shot, view, run } from './lib.mjs';

await run(async () => {
  const { context, close } = await launch();
  const page = await context.newPage();
  const problems = watch(page);
  await page.goto(config.login);
  await page.waitForSelector('#view[data-ready="overview"]');
  await view(page, 'tasks');
  check(!(await page.$('#tasks-unavailable')), 'the AI task routes exist');
  await page.selectOption('#dispatch select[name=target]', 'local');
  await page.selectOption('#dispatch select[name=agent]', 'claude');
  await page.selectOption('#dispatch select[name=permissionMode]', 'default');
  await page.fill('#dispatch [name=cwd]', config.cwd);
  await page.fill('#dispatch [name=prompt]', 'tool');
  await page.click('#dispatch button[type=submit]');
  await page.waitForSelector('.approval button.approve');
  check((await page.textContent('.approval')).includes('Bash'), 'the request names its tool');
  await page.waitForSelector('#task-list tr.task[data-status="waiting_approval"]');
  await shot(page, 'tasks-approval');
  await page.click('.approval button.approve');
  await page.waitForSelector('#task-log .ev[data-type="exit"]');
  await page.waitForSelector('#task-list tr.task[data-status="completed"]');
  check(!(await page.$('.approval')), 'the banner is gone once answered');
  await shot(page, 'tasks-finished');
  check(problems.length === 0, `page problems: ${problems.join('; ')}`);
  await close();
});
