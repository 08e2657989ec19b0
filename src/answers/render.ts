/**
 * The answers as documents (pure): docs/answers.md, with one block per budget between markers so
 * that writing one budget keeps the others' block, and a static HTML page per budget.
 * @module
 */
import { escapeHtml } from "../report/html.ts";
import type { Section, Table } from "./section.ts";

/** What a budget's block says about how it was made. */
export interface BudgetHeader {
  /** The budget's name. */
  name: string;
  /** Its description (budgets.json). */
  description: string;
  /** The command that makes it. */
  command: string;
  /** The `--set` overrides of every question (budget-wide). */
  sets: string[];
  /** The overrides of the command line, when any (a shrunk budget says so). */
  extraSets: string[];
  /** Where its runs are. */
  out: string;
  /** When the block was written (ISO). */
  writtenAt: string;
  /** The ddpm-lab commit and whether the tree was dirty. */
  git: { commit: string; dirty: boolean } | null;
  /** The machine: cores and OS. */
  machine: string;
  /** The sum of the wall times of the runs behind the block (start to end of each), seconds. */
  runSeconds: number;
  /** Number of run folders behind the block. */
  runs: number;
}

/** Where a budget's pictures are, relative to docs/: `answers/<budget>`. */
export function assetsDir(budget: string): string {
  return `answers/${budget}`;
}

const cell = (text: string) => text.replaceAll("|", "\\|").replaceAll("\n", " ");

/** A markdown table. */
export function markdownTable(table: Table): string {
  const lines = [
    `| ${table.head.map(cell).join(" | ")} |`,
    `| ${table.head.map(() => "---").join(" | ")} |`,
    ...table.rows.map((r) => `| ${r.map(cell).join(" | ")} |`),
  ];
  return [
    ...(table.title ? [`**${table.title}**`, ""] : []),
    ...lines,
    ...(table.note ? ["", `<sub>${table.note}</sub>`] : []),
  ].join("\n");
}

function duration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.round((seconds % 3600) / 60);
  return h > 0 ? `${h} h ${m} min` : `${m} min`;
}

/** One question's answer in markdown; pictures under `assets` (relative to the document). */
export function sectionMarkdown(section: Section, options: { assets: string }): string {
  const base = `${options.assets}/${section.id}`;
  const parts = [
    `### ${section.title}`,
    `**Claim** (seed ${section.seeds}): ${section.claim}`,
    ...section.notes.map((n) => `*${n}*`),
    ...section.tables.map(markdownTable),
  ];
  if (section.pictures.length > 0) {
    parts.push(
      [
        `| ${section.pictures.map((p) => cell(p.caption)).join(" | ")} |`,
        `| ${section.pictures.map(() => "---").join(" | ")} |`,
        `| ${
          section.pictures.map((p) => `![${cell(p.caption)}](${base}/${p.name})`).join(" | ")
        } |`,
      ].join("\n"),
    );
  }
  for (const chart of section.charts) {
    parts.push(`![${chart.caption}](${base}/${chart.name})\n\n<sub>${chart.caption}</sub>`);
  }
  parts.push(`**Answer at this budget:** ${section.verdict}`);
  return parts.join("\n\n");
}

/** The markers around a budget's block. */
export function markers(budget: string): { begin: string; end: string } {
  return { begin: `<!-- answers:${budget}:begin -->`, end: `<!-- answers:${budget}:end -->` };
}

/** A budget's block of docs/answers.md. */
export function budgetMarkdown(header: BudgetHeader, sections: readonly Section[]): string {
  const { begin, end } = markers(header.name);
  const sets = header.sets.length > 0
    ? header.sets.map((s) => `\`${s}\``).join(" ")
    : "none (the files as they are)";
  const lines = [
    begin,
    `## Budget \`${header.name}\``,
    header.description,
    `Made by \`${header.command}\` from ${header.runs} run folder(s) under \`${header.out}\` ` +
    `(their runs took ${duration(header.runSeconds)} one after another, start to end of each), ` +
    `written ${header.writtenAt} on ${header.machine}` +
    (header.git
      ? ` at commit ${header.git.commit.slice(0, 10)}${header.git.dirty ? " (dirty)" : ""}`
      : "") +
    `. The budget's overrides of every question: ${sets}` +
    (header.extraSets.length > 0
      ? `; and, on the command line, ${
        header.extraSets.map((s) => `\`${s}\``).join(" ")
      } (a shrunk budget: these are not its numbers)`
      : "") +
    ".",
    ...sections.map((s) => sectionMarkdown(s, { assets: assetsDir(header.name) })),
    end,
  ];
  return lines.join("\n\n");
}

const INTRO = `# Answers to the seeds' questions

Each question of the seed documents is a sweep in \`experiments/answers/\`; \`deno task answers
--budget <cpu|gpu>\` runs what is missing and writes its block below from the run folders. Every
number here is generated from them, and so is each answer's sentence: a difference counts when it
is larger than twice its error (± is the spread over seeds where a row has several, else the
run's own: KID's spread over subsets, a mean's standard error). Do not edit by hand: the next run
of the command rewrites its budget's block. Each budget also has an HTML page,
\`docs/answers/<budget>/index.html\`.`;

/**
 * docs/answers.md with `block` (a budget's, markers included) in place of that budget's old
 * block, or added after the others; the other budgets' blocks are kept as they are.
 */
export function spliceAnswers(
  existing: string | null,
  options: { block: string; budget: string },
): string {
  const { block, budget } = options;
  const blocks: string[] = [];
  const pattern = /<!-- answers:([a-z0-9-]+):begin -->[\s\S]*?<!-- answers:\1:end -->/g;
  let replaced = false;
  for (const match of (existing ?? "").matchAll(pattern)) {
    if (match[1] === budget) {
      blocks.push(block);
      replaced = true;
    } else blocks.push(match[0]);
  }
  if (!replaced) blocks.push(block);
  return `${INTRO}\n\n${blocks.join("\n\n")}\n`;
}

const e = escapeHtml;

function htmlTable(table: Table): string {
  return `${table.title ? `<h4>${e(table.title)}</h4>` : ""}<table><thead><tr>${
    table.head.map((h) => `<th>${e(h)}</th>`).join("")
  }</tr></thead><tbody>${
    table.rows.map((r) => `<tr>${r.map((c) => `<td>${e(c)}</td>`).join("")}</tr>`).join("")
  }</tbody></table>${table.note ? `<p class="note">${e(table.note)}</p>` : ""}`;
}

const CSS = `body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px;
  padding: 0 16px; color: #1d2330; }
h2 { margin-top: 36px; border-bottom: 1px solid #d0d5de; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #d0d5de; padding: 3px 8px; text-align: left; }
th { background: #f1f3f7; } .note, figcaption { color: #5b6475; font-size: 12px; }
.gallery { display: flex; flex-wrap: wrap; gap: 16px; } figure { margin: 0; }
img { image-rendering: pixelated; border: 1px solid #d0d5de; max-width: 100%; }
.answer { background: #eef6ee; padding: 8px 12px; border-left: 4px solid #137333; }`;

/**
 * A budget's HTML page: the same content as its markdown block, pictures and charts next to it
 * (`<question>/<file>`).
 */
export function budgetHtml(header: BudgetHeader, sections: readonly Section[]): string {
  const body = sections.map((s) => {
    const pictures = [
      ...s.pictures.map((p) => ({ src: `${s.id}/${p.name}`, caption: p.caption })),
      ...s.charts.map((c) => ({ src: `${s.id}/${c.name}`, caption: c.caption })),
    ];
    return `<section id="${e(s.id)}"><h2>${e(s.title)}</h2>
<p><b>Claim</b> (seed ${e(s.seeds)}): ${e(s.claim)}</p>
${s.notes.map((n) => `<p class="note">${e(n)}</p>`).join("")}
${s.tables.map(htmlTable).join("\n")}
<div class="gallery">${
      pictures.map((p) =>
        `<figure><img src="${e(p.src)}" alt="${e(p.caption)}"><figcaption>${
          e(p.caption)
        }</figcaption></figure>`
      ).join("")
    }</div>
<p class="answer"><b>Answer at this budget:</b> ${e(s.verdict)}</p></section>`;
  }).join("\n");
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ddpm-lab answers, budget ${
    e(header.name)
  }</title>
<link rel="icon" href="data:,"><style>${CSS}</style></head><body>
<h1>Answers to the seeds' questions: budget <code>${e(header.name)}</code></h1>
<p>${e(header.description)}</p>
<p class="note">Made by <code>${e(header.command)}</code> from ${header.runs} run folder(s) under
<code>${e(header.out)}</code> (${e(duration(header.runSeconds))} of runs), written ${
    e(header.writtenAt)
  } on ${e(header.machine)}${
    header.extraSets.length > 0
      ? `; command-line overrides ${e(header.extraSets.join(" "))} (a shrunk budget)`
      : ""
  }.</p>
${body}
</body></html>
`;
}
