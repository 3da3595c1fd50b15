// How fast the dashboard paints, for `cargo xtask bench` (not a test: it asserts nothing about
// time). Prints one line `figures {...}` with medians in milliseconds, and beside them what the
// same browser needs in the same run for the least a page can be: a navigation to a tiny JSON
// document of the same daemon, and one animation frame.
import { config, launch, check, view, run } from './lib.mjs';

const VIEWS = ['overview', 'peers', 'context', 'messages', 'tasks', 'approvals', 'terminal'];

function median(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

await run(async () => {
  const { context, close } = await launch();
  const page = await context.newPage();
  const rounds = config.rounds || 15;
  await page.goto(config.login);
  await page.waitForSelector('#view[data-ready="overview"]');

  const samples = { firstLoad: [], floorLoad: [], frame: [] };
  for (const name of VIEWS) samples[name] = [];
  for (let i = 0; i < rounds; i++) {
    await page.goto(`${config.base}/dashboard/`);
    await page.waitForSelector('#view[data-ready="overview"]');
    samples.firstLoad.push(Number(await page.getAttribute('#view', 'data-ready-at')));
    for (const name of VIEWS) samples[name].push(await view(page, name));
    samples.frame.push(await page.evaluate(() => new Promise((done) => {
      requestAnimationFrame((a) => requestAnimationFrame((b) => done(b - a)));
    })));
    // The floor of a load: the same daemon, a document with nothing to run or draw.
    const floor = await context.newPage();
    await floor.goto(`${config.base}/api/v1/health`);
    samples.floorLoad.push(await floor.evaluate(() => performance.getEntriesByType('navigation')[0].duration));
    await floor.close();
  }
  const figures = {};
  for (const [name, values] of Object.entries(samples)) {
    check(values.every(Number.isFinite), `${name}: ${values}`);
    figures[name] = median(values);
  }
  console.log(`figures ${JSON.stringify(figures)}`);
  await close();
});
