// The end-of-run report: a loss curve drawn by Vega-Lite (rendered to SVG, then PNG by sharp),
// and the fixed-noise loss without and with the trained adapters.
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';

export interface Evaluation {
  before: number;
  after: number;
  items: number;
  draws: number;
  heldOut: boolean;
}

/** A PNG of the training loss per iteration and its moving average. */
export async function lossCurvePng(losses: number[], title: string): Promise<Buffer> {
  const vega = await import('vega');
  const vegaLite = await import('vega-lite');
  const window = Math.max(1, Math.round(losses.length / 20));
  const values = losses.map((loss, i) => ({ iteration: i + 1, loss }));
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 640,
    height: 320,
    background: 'white',
    data: { values },
    transform: [{ window: [{ op: 'mean', field: 'loss', as: 'average' }], frame: [-window, 0] }],
    layer: [
      {
        mark: { type: 'line', opacity: 0.35, color: '#4c78a8' },
        encoding: {
          x: { field: 'iteration', type: 'quantitative' },
          y: { field: 'loss', type: 'quantitative', scale: { type: 'log' } },
        },
      },
      {
        mark: { type: 'line', color: '#e45756', strokeWidth: 2 },
        encoding: {
          x: { field: 'iteration', type: 'quantitative' },
          y: {
            field: 'average',
            type: 'quantitative',
            title: `loss (moving average over ${window + 1} iterations in red)`,
          },
        },
      },
    ],
  };
  const compiled = vegaLite.compile(spec as Parameters<typeof vegaLite.compile>[0]).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return sharp(Buffer.from(svg)).png().toBuffer();
}

/** vis_data/iter_N.png of the highest N (a VisualizationHook's last round), relative to workDir. */
function latestPictures(workDir: string): string | undefined {
  const folder = join(workDir, 'vis_data');
  if (!existsSync(folder)) return undefined;
  const rounds = readdirSync(folder)
    .map((f) => /^iter_(\d+)(_hook0)?\.png$/.exec(f))
    .filter((m): m is RegExpExecArray => !!m)
    .sort((a, b) => Number(b[1]) - Number(a[1]));
  return rounds[0] ? `vis_data/${rounds[0][0]}` : undefined;
}

export async function writeReport(
  workDir: string,
  losses: number[],
  evaluation: Evaluation | undefined,
  name: string,
): Promise<void> {
  if (losses.length) writeFileSync(join(workDir, 'loss.png'), await lossCurvePng(losses, `${name}: training loss`));
  const lines = [`# ${name}`, '', `Iterations: ${losses.length}.`];
  if (evaluation) {
    const change = ((evaluation.after - evaluation.before) / evaluation.before) * 100;
    lines.push(
      '',
      `Denoising loss on fixed noise and timesteps (${evaluation.items} ${evaluation.heldOut ? 'held-out' : 'training'} items x ${evaluation.draws} draws):`,
      '',
      '| adapters | loss |',
      '| --- | --- |',
      `| none (base model) | ${evaluation.before.toFixed(5)} |`,
      `| trained LoRA | ${evaluation.after.toFixed(5)} |`,
      '',
      `The trained LoRA ${change < 0 ? 'lowers' : 'raises'} it by ${Math.abs(change).toFixed(1)}%.`,
    );
  }
  const pictures = latestPictures(workDir);
  if (pictures) lines.push('', `Samples after the last iteration (${pictures}):`, '', `![samples](${pictures})`);
  writeFileSync(join(workDir, 'report.md'), `${lines.join('\n')}\n`);
  writeFileSync(join(workDir, 'report.json'), JSON.stringify({ iterations: losses.length, evaluation }, null, 2));
}
