// The Hugging Face environment users already set for huggingface_hub, read the same way: the
// endpoint (HF_ENDPOINT, for mirrors), the token (HF_TOKEN, else the file `huggingface-cli
// login` writes), the cache (HF_HUB_CACHE, else HF_HOME/hub) and offline mode (HF_HUB_OFFLINE).
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface HubSettings {
  /** Base URL of the Hub or a mirror, without a trailing slash. */
  endpoint: string;
  token?: string;
  /** Where the token came from, for messages: HF_TOKEN or the token file's path. */
  tokenSource?: string;
  /** The token file `huggingface-cli login` writes (read when HF_TOKEN is unset). */
  tokenFile: string;
  cache: string;
  offline: boolean;
}

const TRUE_VALUES = new Set(['1', 'on', 'yes', 'true']);

function hfHome(env: NodeJS.ProcessEnv): string {
  return env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface');
}

export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.HF_HUB_CACHE || join(hfHome(env), 'hub');
}

export function hubSettings(env: NodeJS.ProcessEnv = process.env): HubSettings {
  const tokenFile = env.HF_TOKEN_PATH || join(hfHome(env), 'token');
  const settings: HubSettings = {
    endpoint: (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, ''),
    tokenFile,
    cache: hubCacheDir(env),
    offline: TRUE_VALUES.has((env.HF_HUB_OFFLINE ?? '').toLowerCase()),
  };
  for (const name of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN'])
    if (env[name]) return { ...settings, token: env[name].trim(), tokenSource: name };
  if (existsSync(tokenFile)) {
    const token = readFileSync(tokenFile, 'utf8').trim();
    if (token) return { ...settings, token, tokenSource: tokenFile };
  }
  return settings;
}
