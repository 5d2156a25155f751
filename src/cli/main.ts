// The lora-train command line: train (the default), sample, download, convert and info. Every option of
// train and sample sets a config key (options.ts), so the config file, --cfg-options and the
// flags meet in one resolved config.
import { constants } from 'node:os';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { type ConfigOverride, loadConfig } from '../config/load.js';
import { launchFromEnv, worldFromEnv } from '../parallel/env.js';
import { deviceFor, launch } from '../parallel/launcher.js';
import { formatBytes } from '../core/progress.js';
import { fetchForConfig } from '../hub/job.js';
import { hubSettings } from '../hub/settings.js';
import { convertCheckpoint } from '../io/convert.js';
import { native } from '../native/loader.js';
import { sampleCommand } from '../sample/generate.js';
import { train } from '../train/train.js';
import { type ConfigOptions, overridesFrom, sampleOptions, trainOptions, yargsOptions } from './options.js';

const configOptions = {
  config: {
    type: 'string',
    describe: 'Config file (.ts, .js or .json) or the name of a shipped config under configs/',
  },
  'cfg-options': {
    type: 'array',
    string: true,
    describe: 'Override config keys: key.path=value ...',
  },
} as const;

/** The config a command names, with --cfg-options then its flags applied. */
function configFrom(name: string, args: Record<string, unknown>, table: ConfigOptions) {
  const cfgOptions = (args['cfg-options'] as string[] | undefined) ?? [];
  const overrides: ConfigOverride[] = [...cfgOptions, ...overridesFrom(table, args)];
  return loadConfig(name, overrides);
}

function trainCommand(y: Argv) {
  return y.command(
    ['train [name]', '$0'],
    'Train a LoRA (the default command); `train <name>` is the same as --config <name>',
    (c) =>
      c
        .positional('name', {
          type: 'string',
          describe: 'Config file or shipped config name (as diffengine train <name>)',
        })
        .options(configOptions)
        .options(yargsOptions(trainOptions))
        .options({
          'nproc-per-node': {
            type: 'number',
            describe:
              'Data-parallel workers on this machine, one device each (as NPROC_PER_NODE; several machines: NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT)',
          },
        }),
    async (args) => {
      const [config, positional] = [args.config as string | undefined, args.name as string | undefined];
      if (positional && config && positional !== config)
        throw new Error(`lora-train: two configs given (${positional} and --config ${config}); pass one`);
      const name = config ?? positional;
      if (!name) {
        console.log('lora-train: nothing to do. Run `lora-train --config <config>` to train, or `lora-train --help`.');
        return;
      }
      const loaded = await configFrom(name, args, trainOptions);
      const place = worldFromEnv();
      const plan = place ? undefined : launchFromEnv(process.env, args['nproc-per-node']);
      if (plan) {
        process.exitCode = await launch(plan, process.argv.slice(1), (line) => console.error(line));
        return;
      }
      if (place && !process.env.LORA_TRAIN_DEVICE_PINNED)
        // A worker torchrun or SLURM started: its own device of the machine's.
        process.env.CUDA_VISIBLE_DEVICES = deviceFor(
          place.localRank,
          place.localWorldSize,
          process.env.CUDA_VISIBLE_DEVICES,
        );
      const result = await train({ config: loaded });
      // As a shell reports a process a signal ended, so scripts can tell a stop from the end.
      if (result.signal) process.exitCode = 128 + constants.signals[result.signal];
      if (place && place.rank > 0) return; // rank 0 reports for the run
      const outcome = result.signal
        ? `stopped by ${result.signal} after ${result.steps} iterations (continue with --resume auto)`
        : `finished after ${result.steps} iterations`;
      console.log(`lora-train: ${outcome}; LoRA: ${result.loraFile}`);
    },
  );
}

function sampleCommandLine(y: Argv) {
  return y.command(
    'sample',
    "Sample image embeddings for prompts with the prior (and a LoRA), and draw them with Würstchen's decoder (--out x.png)",
    (c) =>
      c
        .options({ ...configOptions, config: { ...configOptions.config, demandOption: true } })
        .options(yargsOptions(sampleOptions)),
    async (args) => {
      const { file, count } = await sampleCommand(await configFrom(args.config as string, args, sampleOptions));
      const what = file.toLowerCase().endsWith('.png') ? 'pictures' : 'image embeddings';
      console.log(`lora-train: wrote ${count} ${what} to ${file}`);
    },
  );
}

function downloadCommand(y: Argv) {
  return y.command(
    'download [name]',
    'Fetch every Hub model and dataset a config names into the Hugging Face cache, then exit (for compute nodes without network: train there with HF_HUB_OFFLINE=1)',
    (c) =>
      c.positional('name', { type: 'string', describe: 'Config file or shipped config name' }).options(configOptions),
    async (args) => {
      const name = args.config ?? args.name;
      if (!name) throw new Error('lora-train download: name a config (--config <config>)');
      const repos = await fetchForConfig(await configFrom(name, args, {}), (line) => console.log(line));
      const bytes = repos.reduce((sum, r) => sum + r.bytes, 0);
      const now = repos.reduce((sum, r) => sum + r.transferred, 0);
      console.log(
        `lora-train: ${repos.length} repositories, ${formatBytes(bytes)} in ${hubSettings().cache} (${formatBytes(now)} downloaded now)`,
      );
    },
  );
}

function convertCommand(y: Argv) {
  return y.command(
    'convert <input> <output>',
    'Convert the tensors of a PyTorch checkpoint (.pt, read without running its pickle) to safetensors',
    (c) =>
      c
        .positional('input', {
          type: 'string',
          demandOption: true,
          describe: 'torch.save checkpoint, e.g. model_v2_stage_b.pt',
        })
        .positional('output', { type: 'string', demandOption: true, describe: 'safetensors file to write' })
        .options({
          key: {
            type: 'string',
            describe:
              "Dotted key of the state dict inside the checkpoint (e.g. effnet_state_dict); default: the whole checkpoint's top level",
          },
        }),
    (args) => {
      const count = convertCheckpoint(args.input, args.output, args.key);
      console.log(`lora-train: wrote ${count} tensors to ${args.output}`);
    },
  );
}

export async function main(argv: string[]): Promise<void> {
  let cli = yargs(argv)
    .scriptName('lora-train')
    .usage('$0 --config <config> [options]')
    .epilogue(
      'LoRA fine-tuning of the Würstchen v2 prior (Stage C). The built-in demo: lora-train --config twemoji_tiny_wuerstchen',
    );
  cli = convertCommand(downloadCommand(sampleCommandLine(trainCommand(cli))));
  await cli
    .command('info', 'Print the native backends, CPU kernel set and thread count as JSON', {}, () => {
      console.log(JSON.stringify(native().info(), null, 2));
    })
    .strict()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .help()
    .fail((msg, err, y) => {
      if (err) throw err;
      y.showHelp((help) => console.error(`${help}\n\n${msg}`));
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
