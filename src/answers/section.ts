/**
 * What one answer is made of, before it is written as markdown or HTML: the claim, tables of
 * formatted cells, pictures to copy, charts (Vega-Lite specs) and the generated sentence.
 * @module
 */
import type { TopLevelSpec } from "vega-lite";
import type { AnswerSweep } from "./collect.ts";

/** A table: header cells and rows of cells (already formatted). */
export interface Table {
  /** A title above it. */
  title?: string;
  /** Header cells. */
  head: string[];
  /** Rows of cells. */
  rows: string[][];
  /** A note under it. */
  note?: string;
}

/** A picture of a run folder, copied next to the answers. */
export interface Picture {
  /** The run folder. */
  dir: string;
  /** Its file in the run folder. */
  file: string;
  /** The copy's file name (unique within the question). */
  name: string;
  /** What it shows. */
  caption: string;
}

/** A chart, rendered to SVG next to the answers. */
export interface Chart {
  /** The SVG's file name (unique within the question). */
  name: string;
  /** What it shows. */
  caption: string;
  /** The Vega-Lite spec. */
  spec: TopLevelSpec;
}

/** One answered question. */
export interface Section {
  /** The question's id (its sweep file's name). */
  id: string;
  /** Its title. */
  title: string;
  /** The seed documents it comes from. */
  seeds: string;
  /** The claim, in one line. */
  claim: string;
  /** How many points of the sweep are complete, of how many. */
  points: { complete: number; total: number };
  /** The tables. */
  tables: Table[];
  /** The pictures. */
  pictures: Picture[];
  /** The charts. */
  charts: Chart[];
  /** The generated sentence: does the claim hold at this budget, and which differences count. */
  verdict: string;
  /** Other generated remarks (what one seed stands for, what is missing). */
  notes: string[];
}

/** A question of the seeds and how its answer is built from its sweep. */
export interface Question {
  /** Its id: the name of its sweep file in experiments/answers/ (without `.json`). */
  id: string;
  /** Its title. */
  title: string;
  /** The seed documents it comes from. */
  seeds: string;
  /** The seed's claim, in one line. */
  claim: string;
  /** Builds the tables, pictures, charts and sentence from the sweep's runs (pure). */
  build(sweep: AnswerSweep): Omit<Section, "id" | "title" | "seeds" | "claim" | "points">;
}
