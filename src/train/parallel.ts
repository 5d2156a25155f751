// What data parallelism adds to a training run (DDP's semantics): every rank starts from rank
// 0's adapters, moments and counters; each iteration the ranks agree on the loss (the mean of
// theirs) and on whether to stop, so that they skip, stop and checkpoint together.
import type { ProcessGroup } from '../parallel/group.js';
import type { Prior } from '../models/prior.js';
import { GradScaler, type GradScalerState } from './grad-scaler.js';
import type { TrainingState } from './checkpoints.js';

interface SharedState {
  iteration: number;
  optimizerSteps: number;
  skippedSteps: number;
  skippedInARow: number;
  scaler: GradScalerState;
  losses: (number | null)[];
}

/** Rank 0's tensors (in its key order) on every rank, in place. */
async function broadcastAll(group: ProcessGroup, tensors: Record<string, { data: Float32Array }>): Promise<void> {
  for (const name of Object.keys(tensors).sort()) await group.broadcast(tensors[name]!.data);
}

/** Every rank continues from rank 0's state: its counters and losses (from the store), its
 * adapters and AdamW moments (broadcast). Returns this rank's copy of the state. */
export async function shareStartingState(
  group: ProcessGroup,
  prior: Prior,
  state: TrainingState,
): Promise<TrainingState> {
  const { iteration, optimizerSteps, skippedSteps, skippedInARow, scaler, losses } = state;
  const shared = await group.shareFromMain<SharedState>('state', {
    ...{ iteration, optimizerSteps, skippedSteps, skippedInARow, scaler: scaler.toJSON() },
    losses: losses.map((l) => (Number.isFinite(l) ? l : null)),
  });
  const weights = prior.loraWeights();
  const moments = prior.optimizerState();
  await broadcastAll(group, weights);
  await broadcastAll(group, moments);
  if (!group.isMain) {
    prior.setLoraWeights(weights);
    prior.setOptimizerState(moments);
  }
  return {
    ...shared,
    scaler: new GradScaler(prior.precision === 'fp16', shared.scaler),
    losses: shared.losses.map((l) => l ?? NaN),
  };
}

/** The mean of the ranks' losses, and whether any rank was asked to stop. */
export async function agree(
  group: ProcessGroup,
  loss: number,
  stop: boolean,
): Promise<{ loss: number; stop: boolean }> {
  const [lossSum, stops] = await group.sum([loss, stop ? 1 : 0]);
  return { loss: lossSum! / group.size, stop: stops! > 0 };
}
