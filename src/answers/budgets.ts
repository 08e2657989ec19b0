/**
 * The budgets of `deno task answers` (`experiments/answers/budgets.json`): for each budget, where
 * its runs go and the `--set` overrides that size every question's sweep to it, so that a budget
 * is chosen with a flag and no experiment file is edited.
 * @module
 */
import { resolve } from "node:path";
import { z } from "zod";
import { parseJsonc } from "../config/json.ts";
import { UserError } from "../errors.ts";

/** The budgets file of the checkout. */
export const BUDGETS_FILE: string =
  new URL("../../experiments/answers/budgets.json", import.meta.url).pathname;

/** One budget as the file declares it. */
export const BudgetSchema = z.strictObject({
  description: z.string(),
  out: z.string().min(1),
  sets: z.array(z.string().includes("=")),
  questions: z.record(z.string(), z.array(z.string().includes("="))),
});

/** The budgets file: budget name -> budget. */
export const BudgetsSchema = z.record(z.string().regex(/^[a-z0-9-]+$/), BudgetSchema);

/** One budget. */
export type Budget = z.infer<typeof BudgetSchema> & {
  /** Its name (`cpu`, `gpu`). */
  name: string;
};

/**
 * Reads budget `name` of the budgets file `file` (default {@link BUDGETS_FILE}). Throws a
 * {@linkcode UserError} for an unknown budget (listing the known ones) or a malformed file.
 */
export async function loadBudget(
  name: string,
  options: { file?: string } = {},
): Promise<Budget> {
  const file = options.file ?? BUDGETS_FILE;
  const parsed = BudgetsSchema.safeParse(parseJsonc(await Deno.readTextFile(file), file).value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new UserError(issue.message, { file, path: issue.path.map(String).join(".") });
  }
  const budget = parsed.data[name];
  if (budget === undefined) {
    throw new UserError(`--budget ${name}: no such budget`, {
      file,
      expected: `one of ${Object.keys(parsed.data).join(", ")}`,
    });
  }
  return { ...budget, name };
}

/**
 * The `--set` overrides of question `id` at `budget`: the budget's, then the question's, then
 * `options.extra` (the command's own --set, which win).
 */
export function questionSets(
  budget: Budget,
  id: string,
  options: { extra?: readonly string[] } = {},
): string[] {
  return [...budget.sets, ...(budget.questions[id] ?? []), ...(options.extra ?? [])];
}

/** The outputs root of a budget, absolute (relative paths are relative to the current folder). */
export function budgetOut(budget: Budget, override?: string): string {
  return resolve(override ?? budget.out);
}
