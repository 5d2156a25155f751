// The lora-train command line. Options are declared once in typed tables that also produce
// --help (vitest's CLI style).
import yargs, { type Options } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { loadConfig } from '../config/load.js';
import { native } from '../native/addon.js';
import { sampleCommand } from '../sample/generate.js';
import { train } from '../train/train.js';
import { type WritableTensor, writeSafetensors } from '../io/safetensors.js';
import { TorchCheckpoint } from '../io/torch-checkpoint.js';

export const trainOptions = {
  config: {
    type: 'string',
    describe: 'Config file (.ts, .js or .json) or the name of a shipped config under configs/',
  },
  'work-dir': {
    type: 'string',
    describe: 'Folder for checkpoints, logs and the LoRA file (default: work_dirs/<config name>)',
  },
  'cfg-options': { type: 'array', string: true, describe: 'Override config keys: key.path=value ...' },
  resume: { type: 'string', describe: "Resume from 'auto' (the work dir's latest checkpoint) or a checkpoint path" },
  device: { choices: ['cpu', 'cuda'], describe: 'Backend to train on' },
  'mixed-precision': {
    choices: ['no', 'bf16', 'fp16'],
    describe:
      "Frozen weights and GEMMs in bf16/fp16, as diffusers' --mixed_precision (overrides the config's mixed_precision)",
  },
  seed: { type: 'number', describe: 'Random seed (overrides the config)' },
} as const satisfies Record<string, Options>;

export const sampleOptions = {
  config: { type: 'string', demandOption: true, describe: 'Config (file or name) whose models to use' },
  'cfg-options': { type: 'array', string: true, describe: 'Override config keys: key.path=value ...' },
  lora: { type: 'string', describe: 'LoRA file or folder (diffusers or peft format); none: the base prior' },
  prompt: { type: 'array', string: true, demandOption: true, describe: 'Prompt(s)' },
  'negative-prompt': { type: 'string', default: '', describe: 'The unconditional prompt of classifier-free guidance' },
  num: { type: 'number', default: 1, describe: 'Images per prompt' },
  guidance: { type: 'number', default: 4, describe: 'Classifier-free guidance scale' },
  height: { type: 'number', default: 1024, describe: 'Image height in pixels (latents: ceil(h / 42.67))' },
  width: { type: 'number', default: 1024, describe: 'Image width in pixels' },
  seed: { type: 'number', default: 0, describe: 'Seed of the initial latents and step noise' },
  device: { choices: ['cpu', 'cuda'], default: 'cpu', describe: 'Backend to sample on' },
  'mixed-precision': {
    choices: ['no', 'bf16', 'fp16'],
    describe: "The prior's weights and GEMMs in bf16/fp16 (overrides the config's mixed_precision)",
  },
  out: { type: 'string', default: 'image_embeddings.safetensors', describe: 'safetensors file to write' },
} as const satisfies Record<string, Options>;

export const convertOptions = {
  key: {
    type: 'string',
    describe:
      "Dotted key of the state dict inside the checkpoint (e.g. effnet_state_dict); default: the whole checkpoint's top level",
  },
} as const satisfies Record<string, Options>;

/** Writes every tensor under `key` of a torch checkpoint to safetensors: floating point as F32,
 * integers as I64. Returns how many tensors it wrote. */
export function convertCheckpoint(input: string, output: string, key?: string): number {
  const checkpoint = new TorchCheckpoint(input);
  try {
    const tensors: Record<string, WritableTensor> = {};
    for (const [name, ref] of checkpoint.stateDict(key)) {
      const t = checkpoint.tensor(ref);
      tensors[name] = ref.dtype.startsWith('float') || ref.dtype === 'bfloat16' ? t : { ...t, dtype: 'I64' };
    }
    if (Object.keys(tensors).length === 0)
      throw new Error(`${input}: no tensors under ${key ? `'${key}'` : 'the top level'}`);
    writeSafetensors(output, tensors, { format: 'pt', converted_from: input });
    return Object.keys(tensors).length;
  } finally {
    checkpoint.close();
  }
}

/** --cfg-options with --mixed-precision appended as the config key it stands for. */
function withPrecision(cfgOptions: string[] | undefined, precision: string | undefined): string[] {
  return [...(cfgOptions ?? []), ...(precision ? [`mixed_precision=${precision}`] : [])];
}

export async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName('lora-train')
    .usage('$0 --config <config> [options]')
    .epilogue(
      'LoRA fine-tuning of the Würstchen v2 prior (Stage C). The built-in demo: lora-train --config twemoji_tiny_wuerstchen',
    )
    .command(
      ['train [name]', '$0'],
      'Train a LoRA (the default command); `train <name>` is the same as --config <name>',
      (y) =>
        y
          .positional('name', {
            type: 'string',
            describe: 'Config file or shipped config name (as diffengine train <name>)',
          })
          .options(trainOptions),
      async (args) => {
        if (args.name && args.config && args.name !== args.config)
          throw new Error(`lora-train: two configs given (${args.name} and --config ${args.config}); pass one`);
        const configName = args.config ?? args.name;
        if (!configName) {
          console.log(
            'lora-train: nothing to do. Run `lora-train --config <config>` to train, or `lora-train --help`.',
          );
          return;
        }
        const loaded = await loadConfig(configName, withPrecision(args['cfg-options'], args['mixed-precision']));
        const result = await train({
          config: loaded,
          workDir: args['work-dir'],
          resume: args.resume,
          device: args.device as 'cpu' | 'cuda' | undefined,
          seed: args.seed,
        });
        console.log(
          `lora-train: ${result.interrupted ? 'stopped' : 'finished'} after ${result.steps} iterations; LoRA: ${result.loraFile}`,
        );
      },
    )
    .command(
      'convert <input> <output>',
      'Convert the tensors of a PyTorch checkpoint (.pt, read without running its pickle) to safetensors',
      (y) =>
        y
          .positional('input', {
            type: 'string',
            demandOption: true,
            describe: 'torch.save checkpoint, e.g. model_v2_stage_b.pt',
          })
          .positional('output', { type: 'string', demandOption: true, describe: 'safetensors file to write' })
          .options(convertOptions),
      (args) => {
        const count = convertCheckpoint(args.input, args.output, args.key);
        console.log(`lora-train: wrote ${count} tensors to ${args.output}`);
      },
    )
    .command(
      'sample',
      "Sample image embeddings for prompts with the prior (and a LoRA), for Würstchen's decoder",
      (y) => y.options(sampleOptions),
      async (args) => {
        const config = await loadConfig(args.config, withPrecision(args['cfg-options'], args['mixed-precision']));
        const out = await sampleCommand({
          config,
          lora: args.lora,
          prompts: args.prompt,
          num: args.num,
          guidance: args.guidance,
          height: args.height,
          width: args.width,
          seed: args.seed,
          out: args.out,
          negativePrompt: args['negative-prompt'],
          device: args.device as 'cpu' | 'cuda',
        });
        console.log(`lora-train: wrote ${args.prompt.length * args.num} image embeddings to ${out}`);
      },
    )
    .command('info', 'Print the native backends, CPU kernel set and thread count as JSON', {}, () => {
      console.log(JSON.stringify(native().info(), null, 2));
    })
    .strict()
    .wrap(Math.min(110, process.stdout.columns || 100))
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
