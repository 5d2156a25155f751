// How close each kind of result must be, one name each, as relative error: max |actual -
// expected| / max |expected| (relativeError), so entries near zero neither dominate nor escape.
export const TOLERANCE = {
  /** fp32 forward outputs: against PyTorch in float64, or one backend against another. */
  forward: 1e-5,
  /** fp32 gradients, likewise. */
  gradient: 1e-4,
  /** Whole frozen encoders (dozens of layers) against transformers and torchvision. */
  encoder: 1e-4,
  /** Conversions to bf16/fp16: the same bits everywhere. */
  exact: 0,
  /** GEMMs with bf16/fp16 operands: they multiply exactly in fp32, so only the fp32 sums differ
   * from the float64 reference. */
  lowpGemm: 1e-5,
  /** A backward op against finite differences of its forward in fp32, relative to
   * max(1, |directional derivative|). */
  finiteDifference: 1e-2,
  /** Mixed precision (bf16/fp16 weights and GEMM operands, fp32 elsewhere) against float64:
   * about three times the largest error seen on the prior's fixtures (bf16 3e-4 forward,
   * 1.1e-2 LoRA gradients; fp16 6e-5 and 8e-4). */
  mixed: { bf16: { forward: 2e-3, gradient: 3e-2 }, fp16: { forward: 3e-4, gradient: 3e-3 } },
  /** The decoder (Stage B) with bf16/fp16 Linear weights against float64: about three times the
   * error seen on its fixture (bf16 1.0e-2, fp16 1.2e-3). Its output divides by a predicted
   * scale, which magnifies the rounding more than the prior's plain output. */
  mixedDecoder: { bf16: 3e-2, fp16: 4e-3 },
  /** The GPU against the CPU in mixed precision. The GPU also multiplies attention in
   * bf16/fp16 (its flash kernels round q, k, v, P, dO and dS), as CPUs with AVX512_BF16 do in
   * bf16 (others in fp32): against float64, a CPU emulation of the GPU's bf16 kernels measured
   * 4.7e-3 (o) and 5.2e-3 (dq), AVX512_BF16 up to 5.6e-3 (o) and 6.2e-3 (dk), so attention gets
   * about three times that, and whole steps twice mixed's gradient bound. */
  gpuMixed: {
    attention: { forward: 1.5e-2, gradient: 2e-2 },
    step: { bf16: { forward: 5e-3, gradient: 6e-2 }, fp16: { forward: 1e-3, gradient: 1e-2 } },
  },
} as const;
