/**
 * The signals a command that trains or samples listens to: Ctrl-C and SIGTERM stop it after the
 * current step (with a checkpoint), Slurm's SIGUSR2 before the time limit requeues the job.
 * @module
 */
import type { RequeueRequest } from "../run/types.ts";
import { currentSlurmJob, requeueJob } from "../sweep/slurm.ts";

/**
 * Aborts `controller` on Ctrl-C or SIGTERM (the run finishes its step and checkpoints). A
 * second Ctrl-C exits at once; a SIGTERM after the first stop is ignored, so that the checkpoint
 * is written within Slurm's KillWait (it sends SIGTERM, then SIGKILL).
 */
export function abortOnSignals(controller: AbortController): () => void {
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const handlers = signals.map((signal) => {
    const handler = () => {
      if (controller.signal.aborted) {
        if (signal === "SIGINT") Deno.exit(130);
        console.error("\nSIGTERM: still finishing the step and its checkpoint");
        return;
      }
      console.error(
        "\ninterrupt: finishing the current step and writing a checkpoint (Ctrl-C again to abort)",
      );
      controller.abort();
    };
    Deno.addSignalListener(signal, handler);
    return () => Deno.removeSignalListener(signal, handler);
  });
  return () => handlers.forEach((remove) => remove());
}

/**
 * `run --requeue` (what a sweep's sbatch script runs): on SIGUSR2, Slurm's warning before the
 * time limit, the run stops after its step, checkpoints, and requeues its job, which resumes it.
 * Listens from the start of the command, so that a warning during loading is not lost.
 */
export function requeueOnWarning(
  controller: AbortController,
): RequeueRequest & { release(): void } {
  let warned = false;
  const job = currentSlurmJob();
  const handler = () => {
    if (warned || controller.signal.aborted) return;
    warned = true;
    console.error(
      "\nSIGUSR2 (Slurm: the time limit is near): finishing the current step, writing a " +
        `checkpoint, then ${job ? `requeueing job ${job}` : "stopping (not in a Slurm job)"}`,
    );
    controller.abort();
  };
  Deno.addSignalListener("SIGUSR2", handler);
  return {
    job: job ?? "none",
    requested: () => warned && job !== null,
    requeue: () => requeueJob(job!),
    release: () => Deno.removeSignalListener("SIGUSR2", handler),
  };
}
