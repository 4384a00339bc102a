//! CPU and memory of the processes under test, read from `/proc` (Linux).
//!
//! A benchmark snapshots the watched processes when its measurement starts and when it ends,
//! and samples their resident memory meanwhile; the difference says which process used the
//! cores, and, per thread name, where inside ingest the time went.

use std::{
    collections::BTreeMap,
    fs,
    time::{Duration, Instant},
};

use serde::Serialize;

/// Clock ticks a second of `/proc` CPU times (`getconf CLK_TCK`, 100 on every Linux port).
const TICKS_PER_SEC: f64 = 100.0;

/// A process to watch, named for the report.
#[derive(Debug, Clone)]
pub struct Watched {
    /// `ingest`, `rabbitmq`, …
    pub name: String,
    /// Its pid.
    pub pid: u32,
}

/// Parses `NAME=PID`.
pub fn parse_watch(text: &str) -> Result<Watched, String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=PID"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("`{pid}` is not a process id"))?;
    Ok(Watched {
        name: name.to_string(),
        pid,
    })
}

/// utime + stime in ticks from the text of a `stat` file (the command may hold spaces and
/// parentheses, so fields are counted after its closing parenthesis).
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // After the command: state(0) … utime(11) stime(12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn process_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_ticks(&stat).map(|(_, t)| t)
}

/// CPU ticks by process or thread id, with its name.
type Ticks = BTreeMap<u32, (String, u64)>;

/// CPU ticks of every thread of `pid`, by thread id, with its name.
fn thread_ticks(pid: u32) -> Ticks {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(t) = fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| stat_ticks(&s))
        {
            out.insert(tid, t);
        }
    }
    out
}

/// CPU ticks of every process on the machine, by pid, with its name.
fn all_process_ticks() -> Ticks {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(t) = fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| stat_ticks(&s))
        {
            out.insert(pid, t);
        }
    }
    out
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resident memory of `root` and all its descendants together (`VmRSS`, KiB): a JVM that a
/// Python driver starts counts with it. 0 when `root` is gone.
pub fn tree_rss_kib(root: u32) -> u64 {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for pid in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The parent is the second field after the command name, which may hold spaces.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut total = 0;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        total += memory_kib(pid).map_or(0, |(rss, _)| rss);
        todo.extend(children.get(&pid).into_iter().flatten());
    }
    total
}

/// Busy and total ticks of the whole machine (`/proc/stat`).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The state when a measurement started.
pub struct Snapshot {
    at: Instant,
    processes: Vec<(Watched, Option<u64>)>,
    own: Option<u64>,
    threads: Option<(u32, Ticks)>,
    machine: Option<(u64, u64)>,
    everyone: Ticks,
}

/// CPU of one process over the measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCpu {
    /// Name given on the command line, or `load-generator` for this process.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Cores used on average (1.0 = one core busy all the time).
    pub cores: f64,
    /// Highest `VmRSS` sampled during the measurement, KiB.
    pub rss_max_kib: Option<u64>,
    /// `VmHWM` (peak resident set since the process started) at the end, KiB.
    pub hwm_kib: Option<u64>,
}

/// CPU of the threads of one name (`actix-rt|system`, `tokio-runtime-w`, …).
#[derive(Debug, Clone, Serialize)]
pub struct ThreadGroupCpu {
    /// Thread name as the kernel keeps it (15 characters at most).
    pub name: String,
    /// Threads of that name that used CPU.
    pub threads: usize,
    /// Cores used.
    pub cores: f64,
}

/// What the measurement used.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// Seconds measured.
    pub seconds: f64,
    /// Cores of the machine.
    pub machine_cores: usize,
    /// Cores busy on the whole machine, every process included.
    pub machine_busy_cores: Option<f64>,
    /// Busy cores not used by the processes listed: other processes (a build running beside
    /// the benchmark), kernel threads, and interrupt time such as loopback networking.
    pub other_cores: Option<f64>,
    /// Each watched process and this one.
    pub processes: Vec<ProcessCpu>,
    /// Threads of the process given with `--threads-of`, busiest first.
    pub threads: Vec<ThreadGroupCpu>,
    /// The busiest processes not listed (a build beside the benchmark shows here).
    pub busiest_others: Vec<ThreadGroupCpu>,
}

/// Highest resident memory seen per watched pid, sampled while the load runs.
#[derive(Debug, Default, Clone)]
pub struct RssPeaks(BTreeMap<u32, u64>);

impl RssPeaks {
    /// Samples every pid once.
    pub fn sample(&mut self, pids: &[u32]) {
        for &pid in pids {
            if let Some((rss, _)) = memory_kib(pid) {
                let peak = self.0.entry(pid).or_default();
                *peak = (*peak).max(rss);
            }
        }
    }
}

impl Snapshot {
    /// Snapshots the watched processes, this process and the threads of `threads_of`.
    pub fn take(watched: &[Watched], threads_of: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            processes: watched
                .iter()
                .map(|w| (w.clone(), process_ticks(w.pid)))
                .collect(),
            own: process_ticks(std::process::id()),
            threads: threads_of.map(|pid| (pid, thread_ticks(pid))),
            machine: machine_ticks(),
            everyone: all_process_ticks(),
        }
    }

    /// What was used since the snapshot.
    pub fn report(&self, peaks: &RssPeaks) -> CpuReport {
        let seconds = self.at.elapsed().as_secs_f64().max(1e-9);
        let to_cores = |ticks: u64| ticks as f64 / TICKS_PER_SEC / seconds;
        let mut processes: Vec<ProcessCpu> = self
            .processes
            .iter()
            .map(|(w, before)| {
                let cores = match (before, process_ticks(w.pid)) {
                    (Some(b), Some(a)) => to_cores(a.saturating_sub(*b)),
                    _ => f64::NAN,
                };
                let memory = memory_kib(w.pid);
                ProcessCpu {
                    name: w.name.clone(),
                    pid: w.pid,
                    cores,
                    rss_max_kib: peaks.0.get(&w.pid).copied(),
                    hwm_kib: memory.map(|(_, hwm)| hwm),
                }
            })
            .collect();
        let own = std::process::id();
        processes.push(ProcessCpu {
            name: "load-generator".into(),
            pid: own,
            cores: match (self.own, process_ticks(own)) {
                (Some(b), Some(a)) => to_cores(a.saturating_sub(b)),
                _ => f64::NAN,
            },
            rss_max_kib: memory_kib(own).map(|(rss, _)| rss),
            hwm_kib: memory_kib(own).map(|(_, hwm)| hwm),
        });
        let mut threads = Vec::new();
        if let Some((pid, before)) = &self.threads {
            let mut groups: BTreeMap<String, (usize, u64)> = BTreeMap::new();
            for (tid, (name, after)) in thread_ticks(*pid) {
                let used = after.saturating_sub(before.get(&tid).map_or(0, |(_, t)| *t));
                if used > 0 {
                    let group = groups.entry(name).or_default();
                    group.0 += 1;
                    group.1 += used;
                }
            }
            threads = groups
                .into_iter()
                .map(|(name, (n, ticks))| ThreadGroupCpu {
                    name,
                    threads: n,
                    cores: to_cores(ticks),
                })
                .collect();
            threads.sort_by(|a, b| b.cores.total_cmp(&a.cores));
        }
        let machine_busy_cores = match (self.machine, machine_ticks()) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                Some((busy1 - busy0) as f64 / (total1 - total0) as f64 * cores() as f64)
            }
            _ => None,
        };
        let mut others: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for (pid, (name, after)) in all_process_ticks() {
            if pid == own || self.processes.iter().any(|(w, _)| w.pid == pid) {
                continue;
            }
            let used = after.saturating_sub(self.everyone.get(&pid).map_or(0, |(_, t)| *t));
            if used > 0 {
                let group = others.entry(name).or_default();
                group.0 += 1;
                group.1 += used;
            }
        }
        let mut busiest_others: Vec<ThreadGroupCpu> = others
            .into_iter()
            .map(|(name, (n, ticks))| ThreadGroupCpu {
                name,
                threads: n,
                cores: to_cores(ticks),
            })
            .filter(|g| g.cores >= 0.02)
            .collect();
        busiest_others.sort_by(|a, b| b.cores.total_cmp(&a.cores));
        busiest_others.truncate(5);
        let listed: f64 = processes
            .iter()
            .map(|p| p.cores)
            .filter(|c| c.is_finite())
            .sum();
        CpuReport {
            seconds,
            machine_cores: cores(),
            machine_busy_cores,
            other_cores: machine_busy_cores.map(|m| (m - listed).max(0.0)),
            processes,
            threads,
            busiest_others,
        }
    }
}

/// Samples the resident memory of `pids` in the background until dropped.
pub struct RssSampler {
    peaks: std::sync::Arc<std::sync::Mutex<RssPeaks>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling every `every`.
    pub fn start(pids: Vec<u32>, every: Duration) -> Self {
        let peaks = std::sync::Arc::new(std::sync::Mutex::new(RssPeaks::default()));
        let shared = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Ok(mut p) = shared.lock() {
                    p.sample(&pids);
                }
            }
        });
        Self { peaks, task }
    }

    /// The peaks so far.
    pub fn peaks(&self) -> RssPeaks {
        self.peaks.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_lines_with_odd_command_names() {
        let line = "42 (tokio (rt) w) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(stat_ticks(line), Some(("tokio (rt) w".into(), 300)));
        assert!(parse_watch("ingest=12").is_ok());
        assert!(parse_watch("ingest").is_err());
    }

    #[test]
    fn this_process_is_measured() {
        let snap = Snapshot::take(&[], Some(std::process::id()));
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let report = snap.report(&RssPeaks::default());
        assert_eq!(report.processes.len(), 1);
        assert!(report.processes[0].rss_max_kib.is_some());
    }
}
