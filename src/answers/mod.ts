/**
 * `deno task answers`: each seed question's sweep (experiments/answers/<id>.json) at a budget
 * (budgets.json), run where points are missing (complete points and trainings are reused, as
 * sweeps do), then docs/answers.md and docs/answers/<budget>/ written from the run folders.
 * @module
 */
import { cpus, loadavg, platform, release } from "node:os";
import { join, relative, resolve } from "node:path";
import sharp from "sharp";
import { writeFileAtomic } from "../io/files.ts";
import { formatDuration } from "../run/logs.ts";
import { gitState } from "../run/manifest.ts";
import { findReusableTraining } from "../run/training_cache.ts";
import { PROJECT_DIR } from "../sweep/command.ts";
import { formatFailures, loadSweep, runSweep } from "../sweep/mod.ts";
import { describePoint } from "../sweep/points.ts";
import { buildIndex, refreshIndex, sweepFolder } from "../sweep/sweep_index.ts";
import { type Budget, budgetOut, loadBudget, questionSets } from "./budgets.ts";
import { type AnswerSweep, readAnswerSweep } from "./collect.ts";
import { estimatePoint, measureRates, type Rates } from "./estimate.ts";
import { buildSection, QUESTIONS } from "./questions.ts";
import {
  assetsDir,
  type BudgetHeader,
  budgetHtml,
  budgetMarkdown,
  spliceAnswers,
} from "./render.ts";
import type { Question, Section } from "./section.ts";
import { UserError } from "../errors.ts";

export { QUESTIONS } from "./questions.ts";
export type { Section } from "./section.ts";

/** The folder of the question files. */
export const ANSWERS_DIR: string = join(PROJECT_DIR, "experiments", "answers");

/** Options of {@link runAnswers}. */
export interface AnswersOptions {
  /** The budget's name in budgets.json (default `cpu`). */
  budget?: string;
  /** The budgets file (default experiments/answers/budgets.json). */
  budgetsFile?: string;
  /** Outputs root instead of the budget's `out`. */
  outRoot?: string;
  /** Where answers.md and answers/ go (default `<project>/docs`). */
  docsDir?: string;
  /** Extra `--set` overrides of every point (after the budget's). */
  sets?: string[];
  /** Only these question ids (default all). */
  only?: string[];
  /** List the points and their estimated time; run and write nothing. */
  dryRun?: boolean;
  /** With `dryRun`: measure the time on this machine (default true). */
  estimate?: boolean;
  /** `local` or `slurm`, as for sweeps. */
  launcher?: "local" | "slurm";
  /** At most this many points at once. */
  jobs?: number;
  /** Slurm: follow the jobs until they end (then write the documents). */
  wait?: boolean;
  /** Stops starting points. */
  signal?: AbortSignal;
  /** Progress lines (default console.log). */
  log?: (line: string) => void;
}

/** What {@link runAnswers} did. */
export interface AnswersResult {
  /** The listing of a dry run (also printed). */
  listing?: string;
  /** The estimated seconds of what is left to run (dry run with estimates). */
  estimatedSeconds?: number;
  /** The answers written (not for a dry run). */
  sections: Section[];
  /** docs/answers.md, when written. */
  markdown?: string;
  /** docs/answers/<budget>/index.html, when written. */
  html?: string;
  /** Points started by this command that did not complete, one line each. */
  failures: string[];
}

/** The questions chosen by `only`; a {@linkcode UserError} for an unknown id. */
export function chooseQuestions(only?: readonly string[]): Question[] {
  if (!only || only.length === 0) return [...QUESTIONS];
  const ids = QUESTIONS.map((q) => q.id);
  for (const id of only) {
    if (!ids.includes(id)) {
      throw new UserError(`--only ${id}: no such question`, {
        expected: `some of ${ids.join(", ")}`,
      });
    }
  }
  return QUESTIONS.filter((q) => only.includes(q.id));
}

/** The experiment file of a question. */
export function questionFile(id: string): string {
  return join(ANSWERS_DIR, `${id}.json`);
}

function quoteArg(arg: string): string {
  return /^[\w./=,:@+-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

/** The `deno task sweep` command that runs one question at a budget by hand. */
export function sweepCommandLine(
  file: string,
  options: { out: string; sets: readonly string[] },
): string {
  const rel = (p: string) => {
    const r = relative(Deno.cwd(), p);
    return r.startsWith("..") ? p : r;
  };
  return [
    "deno task sweep",
    rel(file),
    "--out",
    rel(options.out),
    ...options.sets.flatMap((s) => ["--set", s]),
  ]
    .map((a, i) => (i === 0 ? a : quoteArg(a))).join(" ");
}

/**
 * The dry run: every question's points with their status, whether they train or reuse a
 * training (also across questions: the answers run them in order), and, with `estimate`, the
 * time of each measured on this machine.
 */
async function planListing(
  questions: readonly Question[],
  options: { budget: Budget; outRoot: string; extra: string[]; estimate: boolean },
): Promise<{ listing: string; seconds: number }> {
  const { budget, outRoot, extra } = options;
  const lines = [
    `budget ${budget.name}: runs under ${outRoot}`,
    `  ${budget.description}`,
  ];
  // training hash -> the point that trains it (earlier in this plan, or complete)
  const trainedBy = new Map<string, string>();
  const evaluated = new Set<string>();
  const stepCache = new Map<string, Rates>();
  const featureCache = new Map<number, number>();
  let total = 0;
  let left = 0;
  for (const question of questions) {
    const file = questionFile(question.id);
    const sets = questionSets(budget, question.id, { extra });
    const sweep = await loadSweep(file, { sets });
    const indexPath = join(sweepFolder(outRoot, sweep.name), "sweep.json");
    const index = await refreshIndex(buildIndex(sweep, { outRoot, launcher: "local" }), indexPath);
    const complete = index.points.filter((p) => p.status === "complete").length;
    lines.push(
      "",
      `${question.id}: ${question.title}`,
      `  ${index.points.length} points, ${complete} complete; by hand: ` +
        sweepCommandLine(file, { out: outRoot, sets }),
    );
    let questionSeconds = 0;
    for (const point of index.points) {
      const resolved = sweep.points[point.index];
      const config = resolved.loaded.config;
      const datasetKey = `${
        JSON.stringify(config.dataset)
      }/${config.transform.size}/${config.eval?.samples}`;
      let status: string;
      let trains = false;
      const here = `${question.id} point ${point.index}`;
      const trainer = trainedBy.get(point.trainingHash);
      if (point.status === "complete") status = "complete";
      else if (trainer !== undefined) status = `reuses the training of ${trainer}`;
      else if (await findReusableTraining(outRoot, { hash: point.trainingHash })) {
        status = "reuses a complete training";
      } else {
        status = "trains";
        trains = true;
      }
      if (!trainedBy.has(point.trainingHash)) trainedBy.set(point.trainingHash, here);
      let time = "";
      if (point.status !== "complete" && options.estimate) {
        const { datasetSize } = await import("../run/describe.ts");
        const rates = await measureRates(resolved.loaded, { stepCache, featureCache });
        const e = estimatePoint(config, {
          rates,
          datasetSize: await datasetSize(config, resolved.loaded.file),
          trains,
          firstOnDataset: !evaluated.has(datasetKey),
        });
        questionSeconds += e.total;
        time = `  ~${formatDuration(e.total)} (training ${formatDuration(e.train)}, sampling ` +
          `${formatDuration(e.sample)}, evaluation ${formatDuration(e.evaluate)})`;
      }
      if (point.status !== "complete") left++;
      evaluated.add(datasetKey);
      lines.push(`  point ${point.index}  ${describePoint(point)}  ${status}${time}`);
    }
    if (options.estimate) lines.push(`  ${question.id}: ~${formatDuration(questionSeconds)}`);
    total += questionSeconds;
  }
  lines.push("");
  if (options.estimate) {
    const rates = [...stepCache.values()].map((r) => `${r.secondsPerStep.toFixed(3)} s/step`);
    const load = loadavg()[0];
    lines.push(
      `estimated time of the ${left} point(s) left, one after another: ~${formatDuration(total)} ` +
        `on this machine (training steps measured now: ${rates.join(", ") || "none"}, at a load ` +
        `average of ${load.toFixed(1)} on ${cpus().length} cores: on a busier or quieter ` +
        `machine the time scales with it; ONNX Runtime's sampling and the attribute judge are ` +
        `estimated, see src/answers/estimate.ts)`,
    );
  } else lines.push(`${left} point(s) left to run (not estimated)`);
  return { listing: lines.join("\n"), seconds: total };
}

/** Reads the sweeps of the questions at a budget (null for a question not run yet). */
async function readSweeps(
  questions: readonly Question[],
  options: { budget: Budget; outRoot: string; extra: string[] },
): Promise<(AnswerSweep | null)[]> {
  const out: (AnswerSweep | null)[] = [];
  for (const question of questions) {
    const sets = questionSets(options.budget, question.id, { extra: options.extra });
    const sweep = await loadSweep(questionFile(question.id), { sets });
    out.push(await readAnswerSweep(join(sweepFolder(options.outRoot, sweep.name), "sweep.json")));
  }
  return out;
}

/** Largest width of a picture copied into docs/ (wider ones are shrunk by a whole factor). */
const MAX_PICTURE_WIDTH = 640;
/** Smallest width of a picture copied into docs/ (narrower ones are enlarged by a whole factor). */
const MIN_PICTURE_WIDTH = 256;

/**
 * Copies a picture into docs, shrunk by a whole factor when wider than {@link MAX_PICTURE_WIDTH}
 * (smoothly), enlarged by a whole factor when narrower than {@link MIN_PICTURE_WIDTH} (pixels
 * repeated, so that 16x16 faces stay sharp and the file stays small).
 */
async function copyPicture(from: string, to: string): Promise<void> {
  const image = sharp(await Deno.readFile(from));
  const { width = 0 } = await image.metadata();
  const shrink = Math.ceil(width / MAX_PICTURE_WIDTH);
  const grow = width > 0 ? Math.floor(MIN_PICTURE_WIDTH / width) : 1;
  const resized = shrink > 1
    ? image.resize({ width: Math.round(width / shrink), kernel: "lanczos3" })
    : grow > 1
    ? image.resize({ width: width * grow, kernel: "nearest" })
    : image;
  const out = await resized.png({ compressionLevel: 9 }).toBuffer();
  await writeFileAtomic(to, new Uint8Array(out));
}

/** The sum of the wall times of runs (start to end of each) and how many there are. */
function runTime(sweeps: readonly (AnswerSweep | null)[]): { seconds: number; runs: number } {
  let seconds = 0;
  let runs = 0;
  for (const sweep of sweeps) {
    for (const run of sweep?.runs ?? []) {
      if (!run.startedAt || !run.endedAt) continue;
      runs++;
      seconds += (Date.parse(run.endedAt) - Date.parse(run.startedAt)) / 1000;
    }
  }
  return { seconds, runs };
}

/**
 * Writes docs/answers.md (this budget's block) and docs/answers/<budget>/ (pictures, charts,
 * index.html) from the sections.
 */
async function writeDocs(
  sections: readonly Section[],
  options: { docsDir: string; header: BudgetHeader },
): Promise<{ markdown: string; html: string }> {
  const { docsDir, header } = options;
  const assets = join(docsDir, assetsDir(header.name));
  await Deno.remove(assets, { recursive: true }).catch(() => {});
  const { vegaLiteSvg } = await import("../report/charts.ts");
  for (const section of sections) {
    const dir = join(assets, section.id);
    await Deno.mkdir(dir, { recursive: true });
    for (const picture of section.pictures) {
      await copyPicture(join(picture.dir, picture.file), join(dir, picture.name));
    }
    for (const chart of section.charts) {
      await writeFileAtomic(join(dir, chart.name), await vegaLiteSvg(chart.spec));
    }
  }
  const markdown = join(docsDir, "answers.md");
  const existing = await Deno.readTextFile(markdown).catch(() => null);
  await writeFileAtomic(
    markdown,
    spliceAnswers(existing, { block: budgetMarkdown(header, sections), budget: header.name }),
  );
  const html = join(assets, "index.html");
  await Deno.mkdir(assets, { recursive: true });
  await writeFileAtomic(html, budgetHtml(header, sections));
  return { markdown, html };
}

/** The command line that makes a budget's answers, for the documents. */
function commandLine(budget: string): string {
  return `deno task answers --budget ${budget}`;
}

/**
 * Runs the answers: see the module doc. A dry run lists and estimates; otherwise each question's
 * missing points run (in question order, so that a later question reuses an earlier one's
 * training), then the documents are written from whatever is complete.
 */
export async function runAnswers(options: AnswersOptions = {}): Promise<AnswersResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const budget = await loadBudget(options.budget ?? "cpu", { file: options.budgetsFile });
  const outRoot = budgetOut(budget, options.outRoot);
  const extra = options.sets ?? [];
  const questions = chooseQuestions(options.only);
  if (options.dryRun) {
    const { listing, seconds } = await planListing(questions, {
      budget,
      outRoot,
      extra,
      estimate: options.estimate ?? true,
    });
    log(listing);
    if (options.launcher === "slurm") {
      // What each question's submission would be: its points and sbatch script, as for sweeps.
      for (const question of questions) {
        log(`\n== ${question.id} on Slurm`);
        await runSweep(questionFile(question.id), {
          launcher: "slurm",
          jobs: options.jobs,
          outRoot,
          sets: questionSets(budget, question.id, { extra }),
          dryRun: true,
          estimate: false,
          log,
        });
      }
    }
    return { listing, estimatedSeconds: seconds, sections: [], failures: [] };
  }
  const launcher = options.launcher ?? "local";
  const failures: string[] = [];
  const started = performance.now();
  for (const question of questions) {
    if (options.signal?.aborted) break;
    const file = questionFile(question.id);
    log(`\n== ${question.id}: ${question.title}`);
    const result = await runSweep(file, {
      launcher,
      jobs: options.jobs,
      outRoot,
      sets: questionSets(budget, question.id, { extra }),
      wait: options.wait,
      signal: options.signal,
      log,
    });
    if (result.failed.length > 0) {
      failures.push(...formatFailures(result.failed, result.indexPath).split("\n"));
    }
  }
  // The documents show every question found at this budget, not only those run now.
  const sweeps = await readSweeps(QUESTIONS, { budget, outRoot, extra });
  const sections = QUESTIONS.map((q, i) => {
    const section = buildSection(q, sweeps[i]);
    const own = questionSets(budget, q.id);
    const mine = budget.questions[q.id] ?? [];
    if (mine.length > 0 && sweeps[i]) {
      section.notes.unshift(`This question's own overrides at this budget: ${mine.join(" ")}.`);
    }
    const added = (sweeps[i]?.sets ?? []).filter((s) => !own.includes(s));
    if (added.length > 0) {
      section.notes.unshift(
        `Run with overrides beyond the budget's: ${added.join(" ")} (a shrunk budget: these ` +
          "are not its numbers).",
      );
    }
    return section;
  });
  const extraFound = [
    ...new Set(
      sweeps.flatMap((s, i) =>
        (s?.sets ?? []).filter((x) => !questionSets(budget, QUESTIONS[i].id).includes(x))
      ),
    ),
  ];
  const { seconds, runs } = runTime(sweeps);
  const header: BudgetHeader = {
    name: budget.name,
    description: budget.description,
    command: commandLine(budget.name),
    sets: budget.sets,
    extraSets: extraFound,
    out: relative(PROJECT_DIR, outRoot).startsWith("..") ? outRoot : relative(PROJECT_DIR, outRoot),
    writtenAt: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
    git: await gitState(PROJECT_DIR),
    machine: `${cpus().length} cores (${
      cpus()[0]?.model.trim() ?? "?"
    }), ${platform()} ${release()}`,
    runSeconds: seconds,
    runs,
  };
  const docsDir = resolve(options.docsDir ?? join(PROJECT_DIR, "docs"));
  const written = await writeDocs(sections, { docsDir, header });
  log(
    `\nanswers (${budget.name}) written from ${runs} run(s): ${written.markdown}, ${written.html}` +
      ` (this command: ${formatDuration((performance.now() - started) / 1000)})`,
  );
  return { sections, failures, ...written };
}
