// The lora-train command line. Options are declared once in typed tables that also produce
// --help (vitest's CLI style).
import yargs, { type Options } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { native } from './native.js';

export const trainOptions = {
  config: { type: 'string', describe: 'Config file (.ts, .js or .json) or the name of a shipped config under configs/' },
  'work-dir': { type: 'string', describe: 'Folder for checkpoints, logs and the LoRA file (default: work_dirs/<config name>)' },
  'cfg-options': { type: 'array', string: true, describe: 'Override config keys: key.path=value ...' },
  resume: { type: 'string', describe: "Resume from 'auto' (the work dir's latest checkpoint) or a checkpoint path" },
  device: { choices: ['cpu', 'cuda'], describe: 'Backend to train on' },
  seed: { type: 'number', describe: 'Random seed (overrides the config)' },
} as const satisfies Record<string, Options>;

export async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName('lora-train')
    .usage('$0 --config <config> [options]\n\nLoRA fine-tuning of the Würstchen v2 prior (Stage C).')
    .command(
      ['train', '$0'],
      'Train a LoRA (the default command)',
      (y) => y.options(trainOptions),
      (args) => {
        if (!args.config) {
          console.log('lora-train: nothing to do. Run `lora-train --config <config>` to train, or `lora-train --help`.');
          return;
        }
        throw new Error(
          `lora-train: training (--config ${args.config}) is not part of this version yet; ` +
            'this version ships the native op library (`lora-train info`, `npm run bench`).',
        );
      },
    )
    .command('info', 'Print the native backends, CPU kernel set and thread count as JSON', {}, () => {
      console.log(JSON.stringify(native().info(), null, 2));
    })
    .strict()
    .help()
    .fail((msg, err, y) => {
      if (err) throw err;
      console.error(`${y.help()}\n\n${msg}`);
      process.exit(2);
    })
    .parseAsync();
}

export function runCli(): void {
  main(hideBin(process.argv)).catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exitCode = 1;
  });
}
