/**
 * The one type of a set of images across ddpm-lab: a dataset, a cached decode, rendered
 * avatars, a batch's source, an evaluation's image set and a judge's labelled images all are
 * (or extend) {@link RgbImages}.
 * @module
 */

/** `count` uint8 RGB images of `size x size` pixels, NHWC. */
export interface RgbImages {
  /** Number of images. */
  count: number;
  /** Width and height in pixels. */
  size: number;
  /** `count x size x size x 3` bytes, NHWC. */
  pixels: Uint8Array;
}
