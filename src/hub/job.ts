// Every Hub repository a config names, fetched into the cache before the models and the data
// load: the prior snapshot (prior/, and text_encoder/ and tokenizer/ unless another repository
// holds them), the image encoder's file, the dataset's split. Local folders, local files and the
// built-in demo stack need nothing.
import { existsSync } from 'node:fs';
import type { LoadedConfig } from '../config/load.js';
import { formatBytes } from '../core/progress.js';
import { TWEMOJI_DATASET_ID } from '../data/twemoji.js';
import { TINY_MODEL_ID } from '../models/tiny.js';
import { type FetchedRepo, fetchRepo } from './download.js';
import type { HubRequest } from './errors.js';
import {
  type Selector,
  datasetNeeds,
  decoderSnapshotNeeds,
  fileNeeds,
  priorSnapshotNeeds,
  textEncoderNeeds,
} from './needs.js';
import { hubSettings } from './settings.js';

interface Need {
  request: Omit<HubRequest, 'settings'>;
  needs: Selector;
}

/** The Hub repositories a config names, with the files each must provide; for sampling, the
 * prior and the text side only, and the decoder snapshot when pictures are drawn. */
export function configNeeds({ config }: LoadedConfig, forSampling = false, pictures = false): Need[] {
  const { model } = config;
  const hub = (id: string | undefined) => !!id && id !== TINY_MODEL_ID && id !== TWEMOJI_DATASET_ID && !existsSync(id);
  const out: Need[] = [];
  const sharedText =
    model.text_encoder_model === model.prior_model && model.text_encoder_revision === model.prior_revision;
  if (hub(model.prior_model))
    out.push({
      request: { id: model.prior_model!, kind: 'model', revision: model.prior_revision, key: 'model.prior_model' },
      needs: priorSnapshotNeeds(model.prior_model!, sharedText),
    });
  if (!sharedText && hub(model.text_encoder_model))
    out.push({
      request: {
        id: model.text_encoder_model!,
        kind: 'model',
        revision: model.text_encoder_revision,
        key: 'model.text_encoder_model',
      },
      needs: textEncoderNeeds(model.text_encoder_model!),
    });
  if (pictures && hub(model.decoder_model))
    out.push({
      request: {
        id: model.decoder_model!,
        kind: 'model',
        revision: model.decoder_revision,
        key: 'model.decoder_model',
      },
      needs: decoderSnapshotNeeds(model.decoder_model!),
    });
  if (forSampling) return out;
  const ie = model.image_encoder;
  if (!ie.path && ie.repo && ie.file && hub(ie.repo))
    out.push({
      request: { id: ie.repo, kind: 'model', revision: ie.revision, key: 'model.image_encoder.repo' },
      needs: fileNeeds(ie.repo, ie.file),
    });
  const ds = config.train_dataloader.dataset;
  if (hub(ds.dataset))
    out.push({
      request: { id: ds.dataset!, kind: 'dataset', revision: ds.revision, key: 'train_dataloader.dataset.dataset' },
      needs: datasetNeeds(ds.dataset!, ds.split),
    });
  return out;
}

/** Fetches (or, offline, finds) every repository the config names; logs each one's snapshot. */
export async function fetchForConfig(
  loaded: LoadedConfig,
  log: (line: string) => void,
  forSampling = false,
  pictures = false,
): Promise<FetchedRepo[]> {
  const settings = hubSettings();
  const fetched: FetchedRepo[] = [];
  for (const { request, needs } of configNeeds(loaded, forSampling, pictures)) {
    const repo = await fetchRepo({ ...request, settings }, needs, log);
    const got = repo.transferred ? `, ${formatBytes(repo.transferred)} downloaded now` : ', all cached';
    log(
      `lora-train: ${request.id} (${request.key}): ${repo.files} files, ${formatBytes(repo.bytes)} in ${repo.snapshot}${got}`,
    );
    fetched.push(repo);
  }
  return fetched;
}
