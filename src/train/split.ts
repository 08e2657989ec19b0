/**
 * How a batch of n examples is cut, in one place: into shards for the gradient workers (and the
 * sharded forward pass of sampling), and into micro-batches for gradient accumulation. The cut
 * decides the summation order, so a run is byte-identical only for the same cut.
 * @module
 */
import type { ConditionInput } from "../model/conditioning.ts";

/** A half-open range [from, to) of example indices. */
export type Range = readonly [from: number, to: number];

/**
 * `min(n, parts)` contiguous shards as even as possible: shard k is
 * [floor(k n / shards), floor((k + 1) n / shards)), so shard 0 is never the largest.
 */
export function shardRanges(n: number, parts: number): Range[] {
  const shards = Math.max(1, Math.min(n, parts));
  const bound = (k: number): number => Math.floor((k * n) / shards);
  return Array.from({ length: shards }, (_, k) => [bound(k), bound(k + 1)] as const);
}

/** Consecutive micro-batches of at most `size` examples (the whole batch when size >= n). */
export function microBatchRanges(n: number, size: number): Range[] {
  const step = Math.max(1, Math.min(n, size));
  const ranges: Range[] = [];
  for (let from = 0; from < n; from += step) ranges.push([from, Math.min(n, from + step)]);
  return ranges;
}

/**
 * The labels and drop flags of examples `from` to `to` (exclusive) of a condition of `rows`
 * examples, sharing memory.
 */
export function sliceCondition(
  condition: ConditionInput,
  range: { from: number; to: number; rows: number },
): ConditionInput {
  const { from, to, rows } = range;
  const a = rows > 0 ? condition.labels.length / rows : 0;
  return {
    labels: condition.labels.subarray(from * a, to * a),
    ...(condition.drop ? { drop: condition.drop.subarray(from, to) } : {}),
  };
}
