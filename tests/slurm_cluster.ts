/**
 * A one-node Slurm cluster on localhost for tests (as measured in
 * ../shared/reference/sweeps-and-slurm.md): its own munged socket, ports, state, spool and log
 * folders in a temporary folder, so that it never touches a system cluster; every daemon it
 * starts is stopped by the pid in its pid file.
 * @module
 */
import { join } from "node:path";
import { hostname } from "node:os";

/** A running test cluster. */
export interface SlurmCluster {
  /** Environment for client commands (`SLURM_CONF`). */
  env: Record<string, string>;
  /** The scratch folder (config, logs, state). */
  dir: string;
  /** Stops every daemon it started (by pid) and removes the folder. */
  stop(): Promise<void>;
}

const DAEMONS = ["/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch"];

/** Why a cluster cannot start here (missing programs, not root), or null when it can. */
export async function slurmUnavailable(): Promise<string | null> {
  for (const path of DAEMONS) {
    if (!(await Deno.stat(path).then(() => true, () => false))) {
      return `${path} is missing (apt-get install -y slurm-wlm munge; .ci/run does)`;
    }
  }
  if (Deno.uid() !== 0) return "starting slurmd needs root";
  return null;
}

async function run(command: string, args: string[], env?: Record<string, string>): Promise<string> {
  const out = await new Deno.Command(command, { args, env, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${command} ${args.join(" ")} failed: ${text}`);
  return text;
}

async function readPid(path: string): Promise<number | null> {
  const text = await Deno.readTextFile(path).catch(() => "");
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  seconds = 20,
): Promise<void> {
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${seconds} s waiting for ${what}`);
}

/**
 * Starts munged, slurmctld and slurmd with a minimal config: one node with this machine's CPUs
 * and 90% of its memory, no cgroups, no accounting. `requeueDelaySeconds` shortens the wait of a
 * requeued job before it may start again (Slurm's `cred_expire`, 120 s by default) and makes the
 * scheduler look every 2 s (`sched_interval`, 60 s by default).
 */
export async function startSlurmCluster(
  options: { requeueDelaySeconds?: number } = {},
): Promise<SlurmCluster> {
  const dir = await Deno.makeTempDir({ prefix: "ddpm-slurm-" });
  await Deno.chmod(dir, 0o755);
  const host = hostname().split(".")[0];
  const port = 20000 + Math.floor(Math.random() * 20000);
  const munge = join(dir, "munge");
  await Deno.mkdir(munge);
  await run("chown", ["munge:munge", munge]);
  await Deno.chmod(munge, 0o755);
  const socket = join(munge, "munge.socket");
  const pids = {
    munged: join(munge, "munged.pid"),
    slurmctld: join(dir, "slurmctld.pid"),
    slurmd: join(dir, "slurmd.pid"),
  };
  for (const sub of ["state", "spool", "log"]) await Deno.mkdir(join(dir, sub));
  const conf = join(dir, "slurm.conf");
  const cpus = navigator.hardwareConcurrency;
  const memoryMb = Math.floor(Deno.systemMemoryInfo().total / 2 ** 20 * 0.9);
  await Deno.writeTextFile(
    conf,
    [
      "ClusterName=ddpmtest",
      `SlurmctldHost=${host}(127.0.0.1)`,
      `SlurmctldPort=${port}`,
      `SlurmdPort=${port + 1}`,
      "SlurmUser=root",
      "SlurmdUser=root",
      "AuthType=auth/munge",
      "CredType=cred/munge",
      `AuthInfo=socket=${socket}` +
      (options.requeueDelaySeconds ? `,cred_expire=${options.requeueDelaySeconds}` : ""),
      ...(options.requeueDelaySeconds ? ["SchedulerParameters=sched_interval=2"] : []),
      "MpiDefault=none",
      "MailProg=/bin/true",
      "ProctrackType=proctrack/linuxproc",
      "TaskPlugin=task/none",
      "JobAcctGatherType=jobacct_gather/none",
      "AccountingStorageType=accounting_storage/none",
      "SelectType=select/cons_tres",
      "SelectTypeParameters=CR_CPU",
      "ReturnToService=2",
      `StateSaveLocation=${join(dir, "state")}`,
      `SlurmdSpoolDir=${join(dir, "spool")}`,
      `SlurmctldPidFile=${pids.slurmctld}`,
      `SlurmdPidFile=${pids.slurmd}`,
      `SlurmctldLogFile=${join(dir, "log", "slurmctld.log")}`,
      `SlurmdLogFile=${join(dir, "log", "slurmd.log")}`,
      `NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memoryMb} State=UNKNOWN`,
      `PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP`,
      "",
    ].join("\n"),
  );
  const env = { SLURM_CONF: conf };
  const stop = async () => {
    for (const name of ["slurmd", "slurmctld", "munged"] as const) {
      const pid = await readPid(pids[name]);
      if (pid === null) continue;
      try {
        Deno.kill(pid, "SIGTERM");
      } catch {
        continue; // already gone
      }
      await waitFor(`${name} (pid ${pid}) to stop`, () => {
        try {
          Deno.kill(pid, "SIGCONT"); // throws once the process is gone
          return false;
        } catch {
          return true;
        }
      }, 15).catch(() => Deno.kill(pid, "SIGKILL"));
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await run("runuser", [
      "-u",
      "munge",
      "--",
      "/usr/sbin/munged",
      `--socket=${socket}`,
      `--pid-file=${pids.munged}`,
      `--log-file=${join(munge, "munged.log")}`,
      `--seed-file=${join(munge, "munged.seed")}`,
    ]);
    await run("/usr/sbin/slurmctld", ["-i", "-f", conf], env);
    await run("/usr/sbin/slurmd", ["-f", conf], env);
    await waitFor("the node to be idle", async () => {
      const out = await run("sinfo", ["--noheader", "-o", "%T"], env).catch(() => "");
      return out.trim() === "idle";
    });
  } catch (err) {
    const logs = await Promise.all(
      ["slurmctld.log", "slurmd.log"].map((f) =>
        Deno.readTextFile(join(dir, "log", f)).catch(() => "")
      ),
    );
    await stop();
    throw new Error(`${err instanceof Error ? err.message : err}\n${logs.join("\n")}`);
  }
  return { env, dir, stop };
}
