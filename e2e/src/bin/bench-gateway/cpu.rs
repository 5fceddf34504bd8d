//! CPU accounting from /proc and /sys: busy shares of the CPUs, the CPU time of process groups
//! and of everything else on the machine.

use std::process::Command;

use anyhow::{Context as _, Result, anyhow, ensure};

/// Busy time of CPU 0 and CPU 1 from /proc/stat (jiffies: busy, total).
pub struct CpuBusy([(u64, u64); 2]);

impl CpuBusy {
    pub fn take() -> Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat")?)
    }

    /// The busy and total jiffies of CPU 0 and CPU 1 in the text of /proc/stat.
    fn parse(stat: &str) -> Result<Self> {
        let mut out = [(0, 0); 2];
        for (i, cpu) in ["cpu0 ", "cpu1 "].iter().enumerate() {
            let line = stat
                .lines()
                .find(|l| l.starts_with(cpu))
                .ok_or_else(|| anyhow!("no {cpu} in /proc/stat"))?;
            let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let total: u64 = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            out[i] = (total - idle, total);
        }
        Ok(Self(out))
    }

    /// Busy clock ticks of CPU `cpu` (0 or 1) since `earlier`.
    pub fn busy_ticks_since(&self, earlier: &Self, cpu: u32) -> u64 {
        let i = usize::from(cpu != 0);
        self.0[i].0.saturating_sub(earlier.0[i].0)
    }

    /// Busy share of each CPU since `earlier`.
    pub fn since(&self, earlier: &Self) -> [f64; 2] {
        let share = |i: usize| {
            let busy = self.0[i].0.saturating_sub(earlier.0[i].0) as f64;
            let total = self.0[i].1.saturating_sub(earlier.0[i].1).max(1) as f64;
            busy / total
        };
        [share(0), share(1)]
    }
}

/// CPU time (clock ticks) of the whole machine and of the bench's own processes.
pub struct CpuSample {
    busy: u64,
    total: u64,
    own: u64,
}

impl CpuSample {
    /// The machine from /proc/stat; the bench's own: this process with its reaped children (wrk) and
    /// every live process of the `groups` it started.
    pub fn take(groups: &[u32]) -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        Self::from_stat(&stat, &processes()?, std::process::id(), groups)
    }

    /// The sample of the machine's /proc/stat text `stat` and the live `processes`: the bench's own
    /// are the process `me` with its reaped children and every process of the `groups`.
    fn from_stat(stat: &str, processes: &[ProcStat], me: u32, groups: &[u32]) -> Result<Self> {
        let cpu: Vec<u64> = stat
            .lines()
            .find_map(|l| l.strip_prefix("cpu "))
            .ok_or_else(|| anyhow!("/proc/stat has no cpu line"))?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        ensure!(cpu.len() >= 8, "unexpected /proc/stat");
        // user nice system idle iowait irq softirq steal
        let total = cpu[..8].iter().sum();
        let busy = total - cpu[3] - cpu[4];
        let own = processes
            .iter()
            .map(|p| {
                if p.pid == me {
                    p.cpu + p.children_cpu
                } else if groups.contains(&p.pgrp) {
                    p.cpu
                } else {
                    0
                }
            })
            .sum();
        Ok(Self { busy, total, own })
    }

    /// Share of all CPU time since `earlier` that other processes used.
    pub fn others_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        let busy = self.busy.saturating_sub(earlier.busy);
        let own = self.own.saturating_sub(earlier.own);
        busy.saturating_sub(own) as f64 / total
    }
}

/// A live process from /proc: CPU times in clock ticks.
struct ProcStat {
    pid: u32,
    pgrp: u32,
    /// utime + stime.
    cpu: u64,
    /// cutime + cstime (reaped children).
    children_cpu: u64,
}

fn processes() -> Result<Vec<ProcStat>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        out.extend(ProcStat::parse(pid, &text));
    }
    Ok(out)
}

impl ProcStat {
    /// The process `pid` from the text of its /proc/<pid>/stat; none when it has no command name.
    fn parse(pid: u32, text: &str) -> Option<Self> {
        // The fields after the command name (which may hold spaces and parentheses) from field 3.
        let (_, rest) = text.rsplit_once(')')?;
        let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
        let field = |n: usize| f.get(n - 3).copied().unwrap_or(0);
        Some(Self {
            pid,
            pgrp: u32::try_from(field(5)).unwrap_or(0),
            cpu: field(14) + field(15),
            children_cpu: field(16) + field(17),
        })
    }
}

/// CPU time (clock ticks) of the live processes of a process group.
pub fn group_ticks(pgrp: u32) -> Result<u64> {
    Ok(processes()?.iter().filter(|p| p.pgrp == pgrp).map(|p| p.cpu).sum())
}

pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn online_cpus() -> Result<usize> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").context("reading the online CPUs")?;
    count_cpus(&online)
}

/// The number of CPUs in a kernel CPU list (`0-3,8`).
fn count_cpus(online: &str) -> Result<usize> {
    let mut n = 0;
    for range in online.trim().split(',') {
        n += match range.split_once('-') {
            Some((a, b)) => b.parse::<usize>()? - a.parse::<usize>()? + 1,
            None => 1,
        };
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_busy_shares_from_proc_stat() {
        let before = CpuBusy::parse(
            "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 100 0 100 700 100 0 0 0 0 0\ncpu1 10 0 0 90 0 0 0 0 0 0\nintr 1\n",
        )
        .unwrap();
        assert_eq!(before.0, [(200, 1000), (10, 100)]);
        let after = CpuBusy::parse("cpu0 150 0 150 750 150 0 0 0 0 0\ncpu1 110 0 0 90 0 0 0 0 0 0\n").unwrap();
        assert_eq!(
            (after.busy_ticks_since(&before, 0), after.busy_ticks_since(&before, 1)),
            (100, 100)
        );
        let share = after.since(&before);
        assert!((share[0] - 0.5).abs() < 1e-9, "{share:?}");
        assert!((share[1] - 1.0).abs() < 1e-9, "{share:?}");
        // No time passed: no division by zero.
        assert_eq!(before.since(&before), [0.0, 0.0]);
        assert!(CpuBusy::parse("cpu0 1 2 3 4\n").is_err());
    }

    #[test]
    fn cpu_of_other_processes() {
        let stat = |pid: u32, name: &str, pgrp: u32, ticks: [u64; 4]| {
            ProcStat::parse(
                pid,
                &format!(
                    "{pid} ({name}) S 1 {pgrp} {pgrp} 0 -1 4194560 0 0 0 0 {} {} {} {} 20 0 1 0 1 0 0",
                    ticks[0], ticks[1], ticks[2], ticks[3]
                ),
            )
            .unwrap()
        };
        let p = stat(7, "a (b) c", 42, [3, 4, 5, 6]);
        assert_eq!((p.pid, p.pgrp, p.cpu, p.children_cpu), (7, 42, 7, 11));
        assert!(ProcStat::parse(1, "garbage").is_none());
        // user nice system idle iowait irq softirq steal
        let machine = |busy: u64, idle: u64| format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 0\n");
        let earlier = [
            stat(10, "bench", 10, [5, 5, 1, 1]),
            stat(20, "nginx", 20, [10, 0, 0, 0]),
        ];
        let later = [
            stat(10, "bench", 10, [15, 5, 11, 1]),
            stat(20, "nginx", 20, [40, 0, 0, 0]),
            stat(21, "nginx", 20, [10, 0, 0, 0]),
            stat(30, "other", 30, [1000, 0, 0, 0]),
        ];
        let before = CpuSample::from_stat(&machine(100, 900), &earlier, 10, &[20]).unwrap();
        assert_eq!((before.busy, before.total, before.own), (100, 1000, 22));
        let after = CpuSample::from_stat(&machine(300, 1700), &later, 10, &[20]).unwrap();
        // Own: the bench with its reaped children (20 + 12) and group 20 (40 + 10); 60 of the 200 busy
        // ticks since, so others used 140 of 1000.
        assert_eq!(after.own, 82);
        assert!((after.others_since(&before) - 140.0 / 1000.0).abs() < 1e-9);
        assert!(CpuSample::from_stat("cpu  1 2 3\n", &[], 1, &[]).is_err());
        assert!(CpuSample::from_stat("intr 1\n", &[], 1, &[]).is_err());
    }

    #[test]
    fn counts_online_cpus() {
        assert_eq!(count_cpus("0-1\n").unwrap(), 2);
        assert_eq!(count_cpus("0\n").unwrap(), 1);
        assert_eq!(count_cpus("0-3,8,10-11").unwrap(), 7);
        assert!(count_cpus("a-b").is_err());
    }
}
