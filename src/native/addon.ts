// The native addon's raw interface (native/addon.cpp and the model bindings), typed once: the
// ops take host arrays and sizes, the model classes own their weights and activations on the
// device. src/native/ops.ts and src/models/ wrap it with checked, documented APIs.
import type { Device } from '../core/device.js';
import type { ImageEncoderConfig } from '../models/image-encoder.js';
import type { PriorConfig } from '../models/prior.js';
import type { TextEncoderConfig } from '../models/text-encoder.js';
import type { VQGANConfig } from '../models/vqgan.js';
import type { DecoderConfig } from '../models/decoder.js';

/** One op (and shape, for GEMM-shaped ops) of a CPU profile, summed over its calls. */
export interface CpuProfileEntry {
  op: string;
  shape: string;
  ms: number;
  calls: number;
  flops: number;
}

export interface NativeInfo {
  version: string;
  backends: string[];
  /** true when a CUDA device can be used, else why not. */
  cuda: true | string;
  /** The CUDA device in use (name, compute capability, memory), when cuda is true. */
  cudaDevice?: string;
  cpu: {
    kernels: string;
    availableKernels: string[];
    /** bf16 GEMMs run on AMX tiles (with the avx512 set, where CPU and OS allow it). */
    amx: boolean;
    /** bf16 GEMMs run on AVX512_BF16 pair dot products (with the avx512 set, where the CPU has
     * them and AMX does not take the GEMM). */
    avx512bf16: boolean;
    threads: number;
    vendor: string;
    brand: string;
    family: number;
    model: number;
  };
}

type Buf = Float32Array | null;

/** The raw binding: ops, backend information and the model classes. */
export interface NativeAddon {
  info(): NativeInfo;
  setCpuKernels(name: string): void;
  measureClockGHz(seconds: number): number;
  gemm(
    device: string,
    C: Float32Array,
    A: Float32Array | Uint16Array,
    B: Float32Array | Uint16Array,
    M: number,
    N: number,
    K: number,
    transA: boolean,
    transB: boolean,
    alpha: number,
    beta: number,
    aType: string,
    bType: string,
  ): Promise<void>;
  convert(
    device: string,
    dst: Float32Array | Uint16Array,
    dstType: string,
    src: Float32Array | Uint16Array,
    srcType: string,
    n: number,
  ): Promise<void>;
  setAllowTf32(device: string, allow: boolean): void;
  /** true starts timing every CUDA op (events); false stops and returns the totals, longest first. */
  cudaProfile(start: boolean): void | { op: string; ms: number; calls: number }[];
  /** true starts timing every CPU op; false stops and returns the totals (with the GEMM and
   * attention flops counted inside each), longest first. */
  cpuProfile(start: boolean): void | CpuProfileEntry[];
  /** An exclusive flock on `path` (created if missing): its descriptor, or -1 while another holds it. */
  tryLockFile(path: string): number;
  unlockFile(fd: number): void;
  linearForward(
    device: string,
    y: Float32Array,
    x: Float32Array,
    W: Float32Array,
    b: Buf,
    rows: number,
    inF: number,
    outF: number,
  ): Promise<void>;
  linearBackward(
    device: string,
    dx: Buf,
    dW: Buf,
    db: Buf,
    dy: Float32Array,
    x: Float32Array,
    W: Float32Array,
    rows: number,
    inF: number,
    outF: number,
  ): Promise<void>;
  loraLinearForward(
    device: string,
    y: Float32Array,
    xa: Float32Array,
    x: Float32Array,
    W: Float32Array,
    b: Buf,
    A: Float32Array,
    B: Float32Array,
    scale: number,
    rows: number,
    inF: number,
    outF: number,
    r: number,
  ): Promise<void>;
  loraLinearBackward(
    device: string,
    dx: Buf,
    dA: Float32Array,
    dB: Float32Array,
    dW: Buf,
    db: Buf,
    dy: Float32Array,
    x: Float32Array,
    xa: Float32Array,
    W: Float32Array,
    A: Float32Array,
    B: Float32Array,
    scale: number,
    rows: number,
    inF: number,
    outF: number,
    r: number,
  ): Promise<void>;
  attentionForward(
    device: string,
    o: Float32Array,
    lse: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    B: number,
    N: number,
    M: number,
    H: number,
    d: number,
    scale: number,
    compute: string,
  ): Promise<void>;
  attentionBackward(
    device: string,
    dq: Float32Array,
    dk: Float32Array,
    dv: Float32Array,
    dout: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    o: Float32Array,
    lse: Float32Array,
    B: number,
    N: number,
    M: number,
    H: number,
    d: number,
    scale: number,
    compute: string,
  ): Promise<void>;
  layerNormForward(
    device: string,
    y: Float32Array,
    mean: Float32Array,
    rstd: Float32Array,
    x: Float32Array,
    rows: number,
    C: number,
    eps: number,
  ): Promise<void>;
  layerNormBackward(
    device: string,
    dx: Float32Array,
    dy: Float32Array,
    x: Float32Array,
    mean: Float32Array,
    rstd: Float32Array,
    rows: number,
    C: number,
  ): Promise<void>;
  activationForward(
    device: string,
    kind: string,
    y: Float32Array,
    x: Float32Array,
    n: number,
    slope: number,
  ): Promise<void>;
  activationBackward(
    device: string,
    kind: string,
    dx: Float32Array,
    dy: Float32Array,
    x: Float32Array,
    n: number,
    slope: number,
  ): Promise<void>;
  grnForward(
    device: string,
    y: Float32Array,
    u: Float32Array,
    gamma: Float32Array,
    beta: Float32Array,
    B: number,
    P: number,
    C: number,
    eps: number,
  ): Promise<void>;
  grnBackward(
    device: string,
    du: Buf,
    dgamma: Buf,
    dbeta: Buf,
    dy: Float32Array,
    u: Float32Array,
    gamma: Float32Array,
    B: number,
    P: number,
    C: number,
    eps: number,
  ): Promise<void>;
  depthwiseConv3x3Forward(
    device: string,
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Buf,
    B: number,
    H: number,
    W: number,
    C: number,
  ): Promise<void>;
  depthwiseConv3x3Backward(
    device: string,
    dx: Buf,
    dw: Buf,
    dbias: Buf,
    dy: Float32Array,
    x: Float32Array,
    w: Float32Array,
    B: number,
    H: number,
    W: number,
    C: number,
  ): Promise<void>;
  conv2dForward(
    device: string,
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Buf,
    residual: Buf,
    B: number,
    H: number,
    W: number,
    Cin: number,
    Cout: number,
    k: number,
    stride: number,
    silu: boolean,
  ): Promise<void>;
  depthwiseConvForward(
    device: string,
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Buf,
    B: number,
    H: number,
    W: number,
    C: number,
    k: number,
    stride: number,
    replicate: boolean,
    silu: boolean,
  ): Promise<void>;
  conv1x1Forward(
    device: string,
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Buf,
    B: number,
    Cin: number,
    Cout: number,
    P: number,
  ): Promise<void>;
  conv1x1Backward(
    device: string,
    dx: Buf,
    dw: Buf,
    dbias: Buf,
    dy: Float32Array,
    x: Float32Array,
    w: Float32Array,
    B: number,
    Cin: number,
    Cout: number,
    P: number,
  ): Promise<void>;
  mseLoss(
    device: string,
    dpred: Buf,
    pred: Float32Array,
    target: Float32Array,
    n: number,
    gradScale: number,
  ): Promise<number>;
  adamw(
    device: string,
    params: Float32Array[],
    expAvgs: Float32Array[],
    expAvgSqs: Float32Array[],
    grads: Float32Array[],
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    step: number,
    gradScale: number,
  ): Promise<void>;
  clipGradNorm(device: string, grads: Float32Array[], maxNorm: number): Promise<number>;
  Prior: new (device: Device, config: PriorConfig & { weight_type: WeightType }) => NativePrior;
  TextEncoder: new (device: Device, config: TextEncoderConfig) => NativeTextEncoder;
  ImageEncoder: new (device: Device, config: ImageEncoderConfig) => NativeImageEncoder;
  VQGANDecoder: new (device: Device, config: VQGANConfig) => NativeVQGANDecoder;
  /** config as nativeDecoderConfig gives it. */
  Decoder: new (device: Device, config: DecoderConfig & { weight_type?: WeightType }) => NativeDecoder;
  Collective: new (config: CollectiveConfig) => NativeCollective;
  /** Whether this build has Gloo (data parallelism across CPU processes). */
  haveGloo: boolean;
  /** Whether this build has NCCL (GPU gradients summed on the GPUs; libnccl opened at run time). */
  haveNccl: boolean;
}

/** A parameter or LoRA tensor: its state-dict name and shape. */
export interface NamedShape {
  name: string;
  shape: number[];
}

/** What every native model has: named, shaped parameters filled from fp32 host arrays. */
export interface NativeModel {
  parameters(): NamedShape[];
  setParameter(name: string, data: Float32Array): void;
  /** Tensors of a checked safetensors file read natively (see ParameterSink.loadParameters). */
  loadParameters(
    path: string,
    tensors: { name: string; offset: number; dtype: string }[],
  ): { name: string; count: number; index: number; value: number }[];
}

/** Storage of the prior's frozen Linear weights. */
export type WeightType = 'f32' | 'bf16' | 'f16';

export interface NativePrior extends NativeModel {
  enableLora(lora: { rank: number; alpha: number; targets: string[]; dropout: number }): void;
  loraParameters(): NamedShape[];
  setLora(name: string, data: Float32Array): void;
  getLora(name: string, data: Float32Array): void;
  getLoraGrad(name: string, data: Float32Array): void;
  getOptimizerState(name: string, data: Float32Array): void;
  setOptimizerState(name: string, data: Float32Array): void;
  /** out (B, c_in, H, W) from x (B, c_in, H, W), r (B), clip (B, T, c_cond). */
  forward(
    out: Float32Array,
    x: Float32Array,
    r: Float32Array,
    clip: Float32Array,
    B: number,
    H: number,
    W: number,
    T: number,
    train: boolean,
    seed: number,
  ): Promise<void>;
  /** The MSE loss against target; the LoRA gradients stay native. With a collective they end
   * summed over its processes, in buckets of bucketBytes started during the backward. */
  lossAndGrad(
    x: Float32Array,
    r: Float32Array,
    clip: Float32Array,
    target: Float32Array,
    B: number,
    H: number,
    W: number,
    T: number,
    seed: number,
    accumulate: boolean,
    train: boolean,
    lossScale: number,
    collective?: NativeCollective,
    bucketBytes?: number,
  ): Promise<number>;
  /** Clipping and AdamW over every LoRA tensor; the gradient norm before clipping. */
  optimizerStep(
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    maxNorm: number,
    step: number,
    invLossScale: number,
  ): Promise<number>;
  /** Every LoRA gradient summed over the collective's processes, in place. */
  allreduceGrads(collective: NativeCollective): Promise<void>;
  /** Floats of each gradient bucket lossAndGrad sums with bucketBytes, in the order summed. */
  gradientBuckets(bucketBytes: number): number[];
  activationBytes(): number;
  parameterBytes(): number;
}

export interface CollectiveConfig {
  engine: 'gloo' | 'nccl';
  rank: number;
  size: number;
  storeHost: string;
  storePort: number;
  /** Keys of this group in the store. */
  prefix: string;
  /** The address the other processes reach this one at, unless iface names an interface. */
  hostname: string;
  iface: string;
  timeoutMs: number;
}

/** One process's membership in a data-parallel group (native/parallel/collective_binding.cpp). */
export interface NativeCollective {
  /** Meets the other processes through the store. */
  connect(): Promise<void>;
  /** data = the sum over processes of data, in place. */
  allreduce(data: Float32Array): Promise<void>;
  /** data = root's data, in place. */
  broadcast(data: Float32Array, root: number): Promise<void>;
}

export interface NativeTextEncoder extends NativeModel {
  /** out (B, T, hidden) from ids and mask (B, T). */
  encode(out: Float32Array, ids: Int32Array, mask: Uint8Array, B: number, T: number): Promise<void>;
}

export interface NativeImageEncoder extends NativeModel {
  /** out (B, latent, H/32, W/32) from images (B, 3, H, W). */
  encode(out: Float32Array, images: Float32Array, B: number, H: number, W: number): Promise<void>;
}

export interface NativeDecoder extends NativeModel {
  /** out (B, c_out, H, W) = the predicted noise, from x (B, c_in, H, W), r (B), effnet
   * (B, effnet_embd, He, We) and clip (B, T, clip_embd). */
  forward(
    out: Float32Array,
    x: Float32Array,
    r: Float32Array,
    effnet: Float32Array,
    clip: Float32Array,
    B: number,
    H: number,
    W: number,
    He: number,
    We: number,
    T: number,
  ): Promise<void>;
}

export interface NativeVQGANDecoder extends NativeModel {
  /** out (B, out_channels, Ho, Wo) from latents (B, latent_channels, H, W), not clamped. */
  decode(out: Float32Array, latents: Float32Array, B: number, H: number, W: number): Promise<void>;
}
